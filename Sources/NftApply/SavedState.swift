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

    public init(scope: String, generation: UInt32, tables: [NftTableID: NftTableDigests?]) {
        self.scope = scope
        self.generation = generation
        self.tables = tables
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
///     kuberules-nft-state 1
///     scope <boot id>/netns-cookie-<cookie>   (or netns-<device>-<inode> before Linux 5.14)
///     generation <n>
///     table <family> <name> <header digest>      (or: absent <family> <name>)
///     chain <digest> <name>
///     set <digest> <name>
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
        var text = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = fread(&buf, 1, buf.count, f)
            if n <= 0 { break }
            text.append(contentsOf: buf[0..<n])
        }
        fclose(f)
        return text.withUnsafeBufferPointer { Self.parse($0) }
    }

    /// Parses the file's bytes (tens of thousands of lines: no per-line String splitting).
    static func parse(_ b: UnsafeBufferPointer<UInt8>) -> NftSavedState? {
        var lines = [Range<Int>]()
        var start = 0
        for i in 0..<b.count where b[i] == 10 {
            if i > start { lines.append(start..<i) }
            start = i + 1
        }
        if start < b.count { lines.append(start..<b.count) }
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
        guard lines.count >= 3, text(lines[0]) == "kuberules-nft-state 1" else { return nil }
        let scopeLine = text(lines[1]), genLine = text(lines[2])
        guard scopeLine.hasPrefix("scope "), genLine.hasPrefix("generation "),
              let gen = UInt32(genLine.dropFirst("generation ".count)) else { return nil }
        var state = NftSavedState(scope: String(scopeLine.dropFirst("scope ".count)), generation: gen, tables: [:])
        var current: (NftTableID, NftTableDigests)?
        func flush() { if let (id, d) = current { state.tables[id] = .some(d) }; current = nil }
        for r in lines.dropFirst(3) {
            let (kind, rest) = word(r, from: r.lowerBound)
            switch text(kind) {
            case "chain", "set":
                let (digest, nameStart) = word(r, from: rest)
                guard current != nil, let d = hex(digest), nameStart < r.upperBound else { return nil }
                let name = text(nameStart..<r.upperBound)
                if kind.count == 5 { current!.1.chains[name] = d } else { current!.1.sets[name] = d }
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
        var out = "kuberules-nft-state 1\nscope \(state.scope)\ngeneration \(state.generation)\n"
        for id in state.tables.keys.sorted() {
            guard let t = state.tables[id] ?? nil else {
                out += "absent \(id.family.rawValue) \(id.name)\n"
                continue
            }
            out += "table \(id.family.rawValue) \(id.name) \(String(t.header, radix: 16))\n"
            for (name, d) in t.chains.sorted(by: { $0.key < $1.key }) { out += "chain \(String(d, radix: 16)) \(name)\n" }
            for (name, d) in t.sets.sorted(by: { $0.key < $1.key }) { out += "set \(String(d, radix: 16)) \(name)\n" }
        }
        Self.makeDirectories(directory)
        let tmp = path + ".tmp.\(getpid())"
        guard let f = fopen(tmp, "w") else { return }
        let ok = out.utf8.withContiguousStorageIfAvailable { fwrite($0.baseAddress, 1, $0.count, f) == $0.count } ?? false
        if fclose(f) != 0 || !ok {
            unlink(tmp)
            unlink(path)
            return
        }
        if rename(tmp, path) != 0 { unlink(tmp); unlink(path) }
    }
}
