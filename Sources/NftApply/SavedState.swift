import NftModel
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What the last apply committed, as digests, with the ruleset generation it left behind.
/// While the kernel's generation is still that one, nobody has changed any nftables object in
/// the namespace since (every commit bumps it), so the next apply reads back only the chains
/// and sets whose digests differ instead of the whole table.
public struct NftSavedState: Sendable, Equatable {
    /// Where the state is valid: the network namespace and the boot (see `NftStateFile.scope`).
    public var scope: String
    public var generation: UInt32
    /// nil value: the table did not exist.
    public var tables: [NftTableID: NftTableDigests?]
    /// The elements of sets as committed (`NftElementCodec`), with the digest of the set they
    /// belong to: a set that changed is diffed against these instead of being dumped.
    public var elements: [NftTableID: [String: NftSavedElements]]
    /// Tables whose chain and set digests and elements are not loaded yet (`tables` holds
    /// their header and fingerprint): `NftStateStore.loadTable` loads them.
    public var unloaded: Set<NftTableID> = []

    public init(scope: String, generation: UInt32, tables: [NftTableID: NftTableDigests?],
                elements: [NftTableID: [String: NftSavedElements]] = [:]) {
        self.scope = scope
        self.generation = generation
        self.tables = tables
        self.elements = elements
    }
}

/// A set's elements as committed, encoded, with the digest of the whole set (definition and
/// elements) they were part of and the digest of its definition alone. Read from a state file,
/// the bytes load on demand (`NftStateStore.loadElements`); `blob` (their digest) vouches for them.
public struct NftSavedElements: Sendable, Equatable {
    public var setDigest: UInt64
    public var definition: UInt64
    /// `NftDigest.of(bytes)`.
    public var blob: UInt64
    /// The encoded elements (`NftElementCodec`); empty until loaded.
    public var bytes: [UInt8]
    public var loaded: Bool
    /// Where a state file holds the bytes: pack file, offset, length (pack -1: not stored yet).
    public var pack = -1, offset = 0, length = 0

    public init(setDigest: UInt64, definition: UInt64, bytes: [UInt8]) {
        self.setDigest = setDigest
        self.definition = definition
        self.bytes = bytes
        self.blob = bytes.withUnsafeBytes { NftDigest.of($0) }
        self.loaded = true
    }

    /// Stored elements, not loaded yet.
    init(setDigest: UInt64, definition: UInt64, blob: UInt64, pack: Int, offset: Int, length: Int) {
        self.setDigest = setDigest
        self.definition = definition
        self.blob = blob
        self.bytes = []
        self.loaded = false
        self.pack = pack; self.offset = offset; self.length = length
    }

    public static func == (a: NftSavedElements, b: NftSavedElements) -> Bool {
        a.setDigest == b.setDigest && a.definition == b.definition && a.blob == b.blob
    }

    /// The encoding of `set`'s elements.
    public init(_ set: NftSet, digest: UInt64) {
        self.init(setDigest: digest, definition: NftDigest.setDefinition(set), bytes: NftElementCodec.encode(set.elements))
    }
}

/// Where an applier keeps its saved state between runs.
public protocol NftStateStore: AnyObject {
    /// The namespace and boot this process runs in.
    var scope: String { get }
    func load() -> NftSavedState?
    /// Loads the set digests and the (not yet loaded) elements of table `id` into `state` if
    /// they are not loaded yet; false if they cannot be (then the state must not be used).
    func loadTable(_ id: NftTableID, into state: inout NftSavedState) -> Bool
    /// Loads the chain digests of table `id` (after `loadTable`); false if they cannot be.
    func loadChains(_ id: NftTableID, into state: inout NftSavedState) -> Bool
    /// Loads the bytes of the saved elements of set `set` of table `id`; false if they
    /// cannot be (then the set is read from the kernel).
    func loadElements(_ id: NftTableID, _ set: String, into state: inout NftSavedState) -> Bool
    /// Saves the state; nil removes it (the next apply reads the kernel). A table whose digests
    /// carry the `part` they were loaded from and that has no `elements` entry is kept as stored.
    func save(_ state: NftSavedState?)
    /// The state the last `save` wrote, with where it stored each set's elements (nil: as given,
    /// or not written).
    var lastWritten: NftSavedState? { get }
}

extension NftStateStore {
    public var lastWritten: NftSavedState? { nil }
    public func loadTable(_ id: NftTableID, into state: inout NftSavedState) -> Bool { !state.unloaded.contains(id) }
    public func loadChains(_ id: NftTableID, into state: inout NftSavedState) -> Bool {
        (state.tables[id] ?? nil)?.chainsLoaded ?? false
    }
    public func loadElements(_ id: NftTableID, _ set: String, into state: inout NftSavedState) -> Bool {
        state.elements[id]?[set]?.loaded ?? false
    }
}

/// A state store that keeps nothing (the default): every apply reads the kernel.
public final class NftNoStateStore: NftStateStore {
    public init() {}
    public var scope: String { "" }
    public func load() -> NftSavedState? { nil }
    public func save(_ state: NftSavedState?) {}
}

/// Per network namespace, in a directory (`--state-dir`), an index file; per table a part file
/// and a chains file, each named by the digest of its content (so a table that did not change
/// keeps its files, and they are neither rewritten nor read while its fingerprint holds); and
/// per table 64 pack files that
/// hold the sets' elements (a set's pack is picked by its name; a changed set's elements are
/// appended to its pack, and reading them back reads them alone):
///
///     nftables-<ns>.state:
///     kuberules-nft-state 5
///     scope <boot id>/netns-cookie-<cookie>   (or netns-<device>-<inode> before Linux 5.14)
///     generation <n>
///     table <family> <name> <header digest> <fingerprint or -> <part digest> <chains digest>
///     absent <family> <name>
///     end <digest of every byte before this line>
///
///     nftables-<ns>.<part digest>.part:
///     set <digest> <name>
///     elements <set digest> <definition digest> <bytes digest> <pack> <offset> <length> <name>
///     end <part digest: of every byte before this line>
///
///     nftables-<ns>.<chains digest>.chains:  the chain digests (`NftChainDigests`)
///     nftables-<ns>.<table key>-<pack>.pack: encoded elements (`NftElementCodec`), back to back
///
/// Packs only grow (until one is compacted: written anew); every other file is written to a
/// temporary file and renamed, the index last, so a reader sees the old or the new state; every
/// piece is checked against the digest that names it (an old part naming a compacted pack finds
/// other bytes there: that set is then read from the kernel). Parts and chains files no index names are removed after the index is written,
/// and the packs of tables it does not name.
public final class NftStateFile: NftStateStore {
    public let directory: String
    public let scope: String
    public private(set) var lastWritten: NftSavedState?
    /// How many pack files hold a table's elements.
    static let packs = 64

    public init(directory: String) {
        self.directory = directory
        self.scope = Self.currentScope()
    }

    /// The index file of this namespace.
    public var path: String { directory + "/" + stem + ".state" }

    private var stem: String { "nftables-" + (scope.split(separator: "/").last.map(String.init) ?? "unknown") }

    /// The part file with this content digest.
    public func partPath(_ digest: UInt64) -> String { directory + "/" + stem + "." + String(digest, radix: 16) + ".part" }

    /// The chains file with this content digest.
    public func chainsPath(_ digest: UInt64) -> String { directory + "/" + stem + "." + String(digest, radix: 16) + ".chains" }

    /// Pack `k` of table `id`.
    public func packPath(_ id: NftTableID, _ k: Int) -> String {
        directory + "/" + stem + "." + Self.tableKey(id) + "-" + String(k) + ".pack"
    }

    static func tableKey(_ id: NftTableID) -> String {
        var s = id.family.rawValue + " " + id.name
        return String(s.withUTF8 { NftDigest.of(UnsafeRawBufferPointer($0)) }, radix: 16)
    }

    /// The pack of a set, by its name.
    public static func pack(of set: String) -> Int {
        var s = set
        return Int(s.withUTF8 { NftDigest.of(UnsafeRawBufferPointer($0)) } % UInt64(packs))
    }

    /// The boot id and the network namespace's identity (device and inode of /proc/self/ns/net).
    static func currentScope() -> String {
        var boot = "unknown-boot"
        if let f = fopen("/proc/sys/kernel/random/boot_id", "r") {
            var buf = [CChar](repeating: 0, count: 64)
            if fgets(&buf, 64, f) != nil {
                boot = String(decoding: buf.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            }
            fclose(f)
        }
        // The namespace's cookie (Linux 5.14+) is never reused within a boot; an inode number can
        // be, once the namespace is gone.
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        if fd >= 0 {
            defer { close(fd) }
            var cookie: UInt64 = 0
            var len = socklen_t(MemoryLayout<UInt64>.size)
            if getsockopt(fd, SOL_SOCKET, 71 /* SO_NETNS_COOKIE */, &cookie, &len) == 0 {
                return "\(boot)/netns-cookie-\(cookie)"
            }
        }
        var st = stat()
        guard stat("/proc/self/ns/net", &st) == 0 else { return boot + "/unknown-netns" }
        return "\(boot)/netns-\(st.st_dev)-\(st.st_ino)"
    }

    /// mkdir -p.
    static func makeDirectories(_ path: String) {
        var prefix = ""
        for part in path.split(separator: "/") {
            prefix += "/" + part
            mkdir(prefix, 0o700)
        }
    }

    public func load() -> NftSavedState? {
        guard let bytes = Self.readFile(path) else { return nil }
        return bytes.withUnsafeBufferPointer { Self.parseIndex($0) }
    }

    public func loadTable(_ id: NftTableID, into state: inout NftSavedState) -> Bool {
        guard state.unloaded.contains(id) else { return true }
        guard let t = state.tables[id] ?? nil, let part = t.part, let bytes = Self.readFile(partPath(part)),
              let (sets, elements) = bytes.withUnsafeBufferPointer({ Self.parsePart($0, digest: part) }) else { return false }
        var full = t
        full.sets = sets
        state.tables[id] = .some(full)
        state.elements[id] = elements
        state.unloaded.remove(id)
        return true
    }

    public func loadChains(_ id: NftTableID, into state: inout NftSavedState) -> Bool {
        guard let t = state.tables[id] ?? nil else { return false }
        if t.chainsLoaded { return true }
        guard let bytes = Self.readFile(chainsPath(t.storedChainsDigest), allowEmpty: true) else { return false }
        guard bytes.withUnsafeBytes({ NftDigest.of($0) }) == t.storedChainsDigest, let chains = NftChainDigests(bytes: bytes) else {
            unlink(chainsPath(t.storedChainsDigest))   // damaged: the next save writes it again
            return false
        }
        var full = t
        full.chains = chains
        full.chainsLoaded = true
        state.tables[id] = .some(full)
        return true
    }

    public func loadElements(_ id: NftTableID, _ set: String, into state: inout NftSavedState) -> Bool {
        guard var e = state.elements[id]?[set] else { return false }
        if e.loaded { return true }
        guard e.pack >= 0, let bytes = Self.readRange(packPath(id, e.pack), offset: e.offset, length: e.length),
              bytes.withUnsafeBytes({ NftDigest.of($0) }) == e.blob else { return false }
        e.bytes = bytes
        e.loaded = true
        state.elements[id]?[set] = e
        return true
    }

    /// `length` bytes of a file from `offset`.
    static func readRange(_ path: String, offset: Int, length: Int) -> [UInt8]? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        let bytes = [UInt8](unsafeUninitializedCapacity: length) { buf, count in
            count = length == 0 ? 0 : max(0, pread(fd, buf.baseAddress, length, off_t(offset)))
        }
        return bytes.count == length ? bytes : nil
    }

    /// The whole file, read into a buffer of its size (no growing copies of megabytes).
    static func readFile(_ path: String, allowEmpty: Bool = false) -> [UInt8]? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var st = stat()
        guard fstat(fileno(f), &st) == 0, st.st_size > 0 || allowEmpty && st.st_size == 0, st.st_size < 1 << 32 else { return nil }
        let size = Int(st.st_size)
        let bytes = [UInt8](unsafeUninitializedCapacity: size) { buf, count in
            count = fread(buf.baseAddress, 1, size, f)
        }
        return bytes.count == size ? bytes : nil
    }

    /// Reads lines of a file whose last line is `end <digest of every byte before it>`.
    struct Lines {
        let b: UnsafeBufferPointer<UInt8>
        var pos = 0
        /// The digest the last line vouches for.
        let digest: UInt64

        /// nil if the last line does not vouch for the rest: a cut or damaged file.
        init?(_ whole: UnsafeBufferPointer<UInt8>) {
            guard whole.count > 6, whole[whole.count - 1] == 10 else { return nil }
            var endLine = whole.count - 2
            while endLine > 0 && whole[endLine - 1] != 10 { endLine -= 1 }
            let last = String(decoding: UnsafeBufferPointer(rebasing: whole[endLine..<(whole.count - 1)]), as: UTF8.self)
            let body = UnsafeBufferPointer(rebasing: whole[0..<endLine])
            guard last.hasPrefix("end "), let sum = UInt64(last.dropFirst(4), radix: 16),
                  sum == NftDigest.of(UnsafeRawBufferPointer(body)) else { return nil }
            b = body
            digest = sum
        }

        /// The next line (without its newline), or nil at the end.
        mutating func line() -> Range<Int>? {
            guard pos < b.count else { return nil }
            let start = pos
            while pos < b.count && b[pos] != 10 { pos += 1 }
            defer { pos += 1 }
            return start..<pos
        }

        func text(_ r: Range<Int>) -> String { String(decoding: UnsafeBufferPointer(rebasing: b[r]), as: UTF8.self) }

        /// The word at `from` (up to a space) and where the next one starts.
        func word(_ r: Range<Int>, from: Int) -> (Range<Int>, Int) {
            var i = from
            while i < r.upperBound && b[i] != 32 { i += 1 }
            return (from..<i, min(i + 1, r.upperBound))
        }

        func hex(_ r: Range<Int>) -> UInt64? {
            guard !r.isEmpty, r.count <= 16 else { return nil }
            var v: UInt64 = 0
            for i in r {
                let c = b[i]
                let d: UInt8
                switch c {
                case 48...57: d = c - 48
                case 97...102: d = c - 87
                default: return nil
                }
                v = v << 4 | UInt64(d)
            }
            return v
        }

        /// The `n` bytes after the current line and their newline.
        mutating func blob(_ n: UInt64) -> [UInt8]? {
            guard n < UInt64(b.count), pos + Int(n) < b.count, b[pos + Int(n)] == 10 else { return nil }
            defer { pos += Int(n) + 1 }
            return Array(b[pos..<(pos + Int(n))])
        }
    }

    /// Parses the index: every table's header, fingerprint and part (marked unloaded).
    static func parseIndex(_ whole: UnsafeBufferPointer<UInt8>) -> NftSavedState? {
        guard var r = Lines(whole), let l0 = r.line(), r.text(l0) == "kuberules-nft-state 5", let l1 = r.line(), let l2 = r.line() else { return nil }
        let scopeLine = r.text(l1), genLine = r.text(l2)
        guard scopeLine.hasPrefix("scope "), genLine.hasPrefix("generation "),
              let gen = UInt32(genLine.dropFirst("generation ".count)) else { return nil }
        var state = NftSavedState(scope: String(scopeLine.dropFirst("scope ".count)), generation: gen, tables: [:])
        while let l = r.line() {
            guard !l.isEmpty else { return nil }
            let (kind, rest) = r.word(l, from: l.lowerBound)
            let (fam, n1) = r.word(l, from: rest), (name, n2) = r.word(l, from: n1)
            guard let family = NftFamily(rawValue: r.text(fam)), !name.isEmpty else { return nil }
            let id = NftTableID(family, r.text(name))
            switch r.text(kind) {
            case "table":
                let (header, n3) = r.word(l, from: n2), (fingerprint, n4) = r.word(l, from: n3)
                let (part, n5) = r.word(l, from: n4), (chains, _) = r.word(l, from: n5)
                guard let h = r.hex(header), let p = r.hex(part), let c = r.hex(chains) else { return nil }
                var d = NftTableDigests(header: h)
                d.chainsLoaded = false
                d.storedChainsDigest = c
                if r.text(fingerprint) != "-" {
                    guard let f = r.hex(fingerprint) else { return nil }
                    d.fingerprint = f
                }
                d.part = p
                state.tables[id] = .some(d)
                state.unloaded.insert(id)
            case "absent":
                state.tables[id] = .some(nil)
            default:
                return nil
            }
        }
        return state
    }

    /// Parses a part file: the set digests and the stored elements (not loaded).
    static func parsePart(_ whole: UnsafeBufferPointer<UInt8>, digest: UInt64) -> ([String: UInt64], [String: NftSavedElements])? {
        guard var r = Lines(whole), r.digest == digest else { return nil }
        var sets: [String: UInt64] = [:]
        var elements: [String: NftSavedElements] = [:]
        while let l = r.line() {
            guard !l.isEmpty else { return nil }
            let (kind, rest) = r.word(l, from: l.lowerBound)
            switch r.text(kind) {
            case "set":
                let (d, nameStart) = r.word(l, from: rest)
                guard let v = r.hex(d), nameStart < l.upperBound else { return nil }
                sets[r.text(nameStart..<l.upperBound)] = v
            case "elements":
                let (d, n1) = r.word(l, from: rest), (definition, n2) = r.word(l, from: n1), (blob, n3) = r.word(l, from: n2)
                let (pack, n4) = r.word(l, from: n3), (offset, n5) = r.word(l, from: n4), (length, nameStart) = r.word(l, from: n5)
                guard let sd = r.hex(d), let def = r.hex(definition), let b = r.hex(blob), let k = r.hex(pack), k < UInt64(packs),
                      let o = r.hex(offset), let n = r.hex(length), o < 1 << 40, n < 1 << 40, nameStart < l.upperBound else { return nil }
                elements[r.text(nameStart..<l.upperBound)] = NftSavedElements(setDigest: sd, definition: def, blob: b,
                                                                              pack: Int(k), offset: Int(o), length: Int(n))
            default:
                return nil
            }
        }
        return (sets, elements)
    }

    /// A table's part file content (with its end line) and its digest; element entries not
    /// stored in a pack are left out.
    static func part(_ t: NftTableDigests, _ elements: [String: NftSavedElements]) -> (bytes: [UInt8], digest: UInt64) {
        var out = [UInt8]()
        out.reserveCapacity(t.sets.count * 160)
        func put(_ s: StaticString) { s.withUTF8Buffer { out.append(contentsOf: $0) } }
        func name(_ s: String) { out.append(contentsOf: s.utf8); out.append(10) }
        func hex(_ v: UInt64) {
            var digits = 1
            while digits < 16 && v >> (4 * UInt64(digits)) != 0 { digits += 1 }
            for i in stride(from: digits - 1, through: 0, by: -1) {
                let d = UInt8(truncatingIfNeeded: v >> (4 * UInt64(i))) & 15
                out.append(d < 10 ? 48 + d : 87 + d)
            }
            out.append(32)
        }
        for (n, d) in t.sets.sorted(by: { $0.key < $1.key }) { put("set "); hex(d); name(n) }
        for (n, e) in elements.sorted(by: { $0.key < $1.key }) where e.pack >= 0 {
            put("elements "); hex(e.setDigest); hex(e.definition); hex(e.blob)
            hex(UInt64(e.pack)); hex(UInt64(e.offset)); hex(UInt64(e.length)); name(n)
        }
        let digest = out.withUnsafeBytes { NftDigest.of($0) }
        out.append(contentsOf: "end \(String(digest, radix: 16))\n".utf8)
        return (out, digest)
    }

    /// Stores the elements of table `id` not stored yet: appended to the pack of their set (the
    /// bytes already there stay valid, so the part on disk still describes them until the new
    /// index is in place). A pack grown past twice its live bytes (and 256 KiB) is written
    /// anew with the live entries only, through a temporary file. Returns the elements with
    /// where they are stored; entries that cannot be read back are left out.
    func writePacks(_ id: NftTableID, _ elements: [String: NftSavedElements]) -> [String: NftSavedElements]? {
        var out = elements
        var new = [[String]](repeating: [], count: Self.packs)
        var live = [Int](repeating: 0, count: Self.packs)
        for (name, e) in elements {
            if e.pack < 0 { new[Self.pack(of: name)].append(name) } else if e.pack < Self.packs { live[e.pack] += e.length }
        }
        for k in 0..<Self.packs where !new[k].isEmpty {
            let path = packPath(id, k)
            var st = stat()
            let size = stat(path, &st) == 0 ? Int(st.st_size) : 0
            let added = new[k].reduce(0) { $0 + elements[$1]!.bytes.count }
            if size > 2 * (live[k] + added) + (256 << 10) {
                // Compact: the live entries of this pack, then the new ones, in a new file.
                guard let old = Self.readFile(path, allowEmpty: true) else { return nil }
                var bytes = [UInt8]()
                for (name, e) in elements where e.pack == k {
                    guard e.offset + e.length <= old.count else { out[name] = nil; continue }
                    let b = Array(old[e.offset..<(e.offset + e.length)])
                    guard b.withUnsafeBytes({ NftDigest.of($0) }) == e.blob else { out[name] = nil; continue }
                    out[name]!.offset = bytes.count
                    bytes += b
                }
                for name in new[k] {
                    out[name]!.pack = k; out[name]!.offset = bytes.count; out[name]!.length = elements[name]!.bytes.count
                    bytes += elements[name]!.bytes
                }
                guard write(bytes, to: path) else { return nil }
                continue
            }
            let fd = open(path, O_WRONLY | O_CREAT, 0o644)
            guard fd >= 0 else { return nil }
            defer { close(fd) }
            var at = size
            for name in new[k] {
                let b = elements[name]!.bytes
                guard b.withUnsafeBytes({ pwrite(fd, $0.baseAddress, $0.count, off_t(at)) }) == b.count else { return nil }
                out[name]!.pack = k; out[name]!.offset = at; out[name]!.length = b.count
                at += b.count
            }
        }
        for name in out.keys where out[name]!.pack >= 0 { out[name]!.bytes = []; out[name]!.loaded = false }
        return out
    }

    /// Writes `bytes` to `path` through a temporary file and a rename.
    func write(_ bytes: [UInt8], to path: String) -> Bool {
        let tmp = path + ".tmp.\(getpid())"
        guard let f = fopen(tmp, "w") else { return false }
        let ok = bytes.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count, f) == $0.count }
        if fclose(f) != 0 || !ok || rename(tmp, path) != 0 {
            unlink(tmp)
            return false
        }
        return true
    }

    /// Removes the index and every other file of this namespace (cleanup).
    public func removeAll() {
        unlink(path)
        removeFiles(keeping: [], tables: [])
    }

    /// Removes this namespace's part and chains files other than `keep`, and its pack files
    /// of tables other than `tables` (table keys).
    func removeFiles(keeping keep: Set<UInt64>, tables: Set<String>) {
        guard let dir = opendir(directory) else { return }
        defer { closedir(dir) }
        let prefix = stem + "."
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name.hasPrefix(prefix) else { continue }
            let rest = name.dropFirst(prefix.count)
            if let tmp = rest.firstRange(of: ".tmp.") {
                // Left by a writer that died between writing and renaming (not ours: we rename
                // before we get here).
                if rest[tmp.upperBound...] == String(getpid()) { continue }
            } else if rest.hasSuffix(".part") || rest.hasSuffix(".chains") {
                if let dot = rest.firstIndex(of: "."), let d = UInt64(rest[..<dot], radix: 16), keep.contains(d) { continue }
            } else if rest.hasSuffix(".pack") {
                if let dash = rest.lastIndex(of: "-"), tables.contains(String(rest[..<dash])) { continue }
            } else {
                continue
            }
            unlink(directory + "/" + name)
        }
    }

    public func save(_ state: NftSavedState?) {
        lastWritten = nil
        guard let state else {
            // The other files stay (the next save removes those it does not name): a table
            // saved again as stored keeps referring to them.
            unlink(path)
            return
        }
        Self.makeDirectories(directory)
        var out = [UInt8]()
        func put(_ s: String) { out.append(contentsOf: s.utf8) }
        put("kuberules-nft-state 5\nscope \(state.scope)\ngeneration \(state.generation)\n")
        var keep = Set<UInt64>(), tables = Set<String>()
        var written = state
        for id in state.tables.keys.sorted() {
            guard let t = state.tables[id] ?? nil else {
                put("absent \(id.family.rawValue) \(id.name)\n")
                continue
            }
            tables.insert(Self.tableKey(id))
            let part: UInt64
            let chains = t.chainsDigest
            if let p = t.part, state.elements[id] == nil || state.unloaded.contains(id) {
                part = p   // kept as stored
            } else {
                if t.chainsLoaded && access(chainsPath(chains), F_OK) != 0 {
                    guard write(t.chains.bytes, to: chainsPath(chains)) else { unlink(path); return }
                }
                guard let elements = writePacks(id, state.elements[id] ?? [:]) else { unlink(path); return }
                let (bytes, digest) = Self.part(t, elements)
                guard write(bytes, to: partPath(digest)) else { unlink(path); return }
                part = digest
                written.elements[id] = elements
                written.tables[id]??.part = digest
            }
            keep.insert(part)
            keep.insert(chains)
            put("table \(id.family.rawValue) \(id.name) \(String(t.header, radix: 16)) \(t.fingerprint.map { String($0, radix: 16) } ?? "-") \(String(part, radix: 16)) \(String(chains, radix: 16))\n")
        }
        out.withUnsafeBytes { put("end \(String(NftDigest.of($0), radix: 16))\n") }
        guard write(out, to: path) else { unlink(path); return }
        removeFiles(keeping: keep, tables: tables)
        lastWritten = written
    }
}
