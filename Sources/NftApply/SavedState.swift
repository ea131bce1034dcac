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

    public init(scope: String, generation: UInt32, tables: [NftTableID: NftTableDigests?],
                elements: [NftTableID: [String: NftSavedElements]] = [:]) {
        self.scope = scope
        self.generation = generation
        self.tables = tables
        self.elements = elements
    }
}

/// A set's elements as committed, encoded, with the digest of the whole set (definition and
/// elements) they were part of and the digest of its definition alone.
public struct NftSavedElements: Sendable, Equatable {
    public var setDigest: UInt64
    public var definition: UInt64
    public var bytes: [UInt8]

    public init(setDigest: UInt64, definition: UInt64, bytes: [UInt8]) {
        self.setDigest = setDigest
        self.definition = definition
        self.bytes = bytes
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
    /// Saves the state; nil removes it (the next apply reads the kernel).
    func save(_ state: NftSavedState?)
}

/// A state store that keeps nothing (the default): every apply reads the kernel.
public final class NftNoStateStore: NftStateStore {
    public init() {}
    public var scope: String { "" }
    public func load() -> NftSavedState? { nil }
    public func save(_ state: NftSavedState?) {}
}

/// One line-oriented file per network namespace in a directory (`--state-dir`):
///
///     kuberules-nft-state 3
///     scope <boot id>/netns-cookie-<cookie>   (or netns-<device>-<inode> before Linux 5.14)
///     generation <n>
///     table <family> <name> <header digest>      (or: absent <family> <name>)
///     fingerprint <fingerprint>                  (only for a table built with one)
///     chains <length>                            followed by <length> bytes (`NftChainDigests`) and a newline
///     set <digest> <name>
///     elements <set digest> <definition digest> <length> <name>
///                                                followed by <length> bytes (`NftElementCodec`) and a newline
///     end <digest of every byte before this line>
///
/// Written to a temporary file and renamed, so a reader sees the old or the new state.
public final class NftStateFile: NftStateStore {
    public let directory: String
    public let scope: String

    public init(directory: String) {
        self.directory = directory
        self.scope = Self.currentScope()
    }

    /// The file of this namespace.
    public var path: String {
        let ns = scope.split(separator: "/").last.map(String.init) ?? "unknown"
        return directory + "/nftables-" + ns + ".state"
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
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        // One read into a buffer of the file's size (no growing copies of a 5 MB file).
        var st = stat()
        guard fstat(fileno(f), &st) == 0, st.st_size > 0, st.st_size < 1 << 32 else { return nil }
        let size = Int(st.st_size)
        let text = [UInt8](unsafeUninitializedCapacity: size) { buf, count in
            count = fread(buf.baseAddress, 1, size, f)
        }
        guard text.count == size else { return nil }
        return text.withUnsafeBufferPointer { Self.parse($0) }
    }

    /// Parses the file's bytes (tens of thousands of lines: no per-line String splitting).
    static func parse(_ whole: UnsafeBufferPointer<UInt8>) -> NftSavedState? {
        // The last line vouches for every byte before it: a cut or damaged file is no state.
        guard whole.count > 6, whole[whole.count - 1] == 10 else { return nil }
        var endLine = whole.count - 2
        while endLine > 0 && whole[endLine - 1] != 10 { endLine -= 1 }
        let last = String(decoding: UnsafeBufferPointer(rebasing: whole[endLine..<(whole.count - 1)]), as: UTF8.self)
        guard last.hasPrefix("end "), let sum = UInt64(last.dropFirst(4), radix: 16),
              sum == NftDigest.of(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: whole[0..<endLine]))) else { return nil }
        let b = UnsafeBufferPointer(rebasing: whole[0..<endLine])
        var pos = 0
        /// The next line (without its newline), or nil at the end.
        func line() -> Range<Int>? {
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
        guard let l0 = line(), text(l0) == "kuberules-nft-state 3", let l1 = line(), let l2 = line() else { return nil }
        let scopeLine = text(l1), genLine = text(l2)
        guard scopeLine.hasPrefix("scope "), genLine.hasPrefix("generation "),
              let gen = UInt32(genLine.dropFirst("generation ".count)) else { return nil }
        var state = NftSavedState(scope: String(scopeLine.dropFirst("scope ".count)), generation: gen, tables: [:])
        var current: (NftTableID, NftTableDigests)?
        func flush() { if let (id, d) = current { state.tables[id] = .some(d) }; current = nil }
        while let r = line() {
            guard !r.isEmpty else { return nil }
            let (kind, rest) = word(r, from: r.lowerBound)
            switch text(kind) {
            case "set":
                let (digest, nameStart) = word(r, from: rest)
                guard current != nil, let d = hex(digest), nameStart < r.upperBound else { return nil }
                current!.1.sets[text(nameStart..<r.upperBound)] = d
            case "fingerprint":
                let (value, _) = word(r, from: rest)
                guard current != nil, let f = hex(value) else { return nil }
                current!.1.fingerprint = f
            case "chains":
                let (length, _) = word(r, from: rest)
                guard current != nil, let n = hex(length), n < UInt64(b.count), pos + Int(n) < b.count, b[pos + Int(n)] == 10,
                      let chains = NftChainDigests(bytes: Array(b[pos..<(pos + Int(n))])) else { return nil }
                pos += Int(n) + 1
                current!.1.chains = chains
            case "elements":
                let (digest, n1) = word(r, from: rest), (definition, n2) = word(r, from: n1)
                let (length, nameStart) = word(r, from: n2)
                guard let id = current?.0, let d = hex(digest), let def = hex(definition), let n = hex(length), nameStart < r.upperBound,
                      n < UInt64(b.count), pos + Int(n) < b.count, b[pos + Int(n)] == 10 else { return nil }
                let bytes = Array(b[pos..<(pos + Int(n))])
                pos += Int(n) + 1
                state.elements[id, default: [:]][text(nameStart..<r.upperBound)] = NftSavedElements(setDigest: d, definition: def, bytes: bytes)
            case "table":
                flush()
                let (fam, n1) = word(r, from: rest), (name, n2) = word(r, from: n1), (digest, _) = word(r, from: n2)
                guard let family = NftFamily(rawValue: text(fam)), let h = hex(digest) else { return nil }
                current = (NftTableID(family, text(name)), NftTableDigests(header: h))
            case "absent":
                flush()
                let (fam, n1) = word(r, from: rest), (name, _) = word(r, from: n1)
                guard let family = NftFamily(rawValue: text(fam)) else { return nil }
                state.tables[NftTableID(family, text(name))] = .some(nil)
            default:
                return nil
            }
        }
        flush()
        return state
    }

    public func save(_ state: NftSavedState?) {
        guard let state else {
            unlink(path)
            return
        }
        var out = [UInt8]()
        func put(_ s: String) { out.append(contentsOf: s.utf8) }
        put("kuberules-nft-state 3\nscope \(state.scope)\ngeneration \(state.generation)\n")
        for id in state.tables.keys.sorted() {
            guard let t = state.tables[id] ?? nil else {
                put("absent \(id.family.rawValue) \(id.name)\n")
                continue
            }
            put("table \(id.family.rawValue) \(id.name) \(String(t.header, radix: 16))\n")
            if let f = t.fingerprint { put("fingerprint \(String(f, radix: 16))\n") }
            put("chains \(String(t.chains.bytes.count, radix: 16))\n")
            out.append(contentsOf: t.chains.bytes)
            out.append(10)
            for (name, d) in t.sets { put("set \(String(d, radix: 16)) \(name)\n") }
            for (name, e) in state.elements[id] ?? [:] {
                put("elements \(String(e.setDigest, radix: 16)) \(String(e.definition, radix: 16)) \(String(e.bytes.count, radix: 16)) \(name)\n")
                out.append(contentsOf: e.bytes)
                out.append(10)
            }
        }
        out.withUnsafeBytes { put("end \(String(NftDigest.of($0), radix: 16))\n") }
        Self.makeDirectories(directory)
        let tmp = path + ".tmp.\(getpid())"
        guard let f = fopen(tmp, "w") else { return }
        let ok = out.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count, f) == $0.count }
        if fclose(f) != 0 || !ok {
            unlink(tmp)
            unlink(path)
            return
        }
        if rename(tmp, path) != 0 { unlink(tmp); unlink(path) }
    }
}
