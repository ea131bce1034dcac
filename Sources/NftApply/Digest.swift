import NftModel
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Parallel

/// Stable 64-bit digests of chains, sets and table headers over a canonical, length-prefixed
/// encoding of the value, mixed a 64-bit word at a time (multiply by an odd constant, fold the
/// high half down). Unlike `Hasher`, which is seeded per process, the same value gives the same
/// digest in every run, so a digest saved by one `apply` can be compared by the next. Rule
/// handles are not part of a rule's value and not digested.
public struct NftDigest: Sendable {
    private var h: UInt64 = 0xcbf2_9ce4_8422_2325

    public init() {}

    public var value: UInt64 { h ^ (h >> 31) }

    @inline(__always) mutating func u64(_ v: UInt64) {
        h = (h ^ v) &* 0x9e37_79b9_7f4a_7c15
        h ^= h >> 29
    }

    @inline(__always) mutating func byte(_ b: UInt8) { u64(UInt64(b) | 0x100) }
    @inline(__always) mutating func u32(_ v: UInt32) { u64(UInt64(v) | 0x1_0000_0000) }
    mutating func int(_ v: Int) { u64(UInt64(bitPattern: Int64(v))) }
    mutating func bool(_ v: Bool) { byte(v ? 1 : 0) }

    /// Length, then the bytes eight at a time (little-endian words, the last one zero-padded).
    mutating func raw(_ b: UnsafeRawBufferPointer) {
        int(b.count)
        var i = 0
        while i + 8 <= b.count {
            u64(UInt64(littleEndian: b.loadUnaligned(fromByteOffset: i, as: UInt64.self)))
            i += 8
        }
        if i < b.count {
            var w: UInt64 = 0, shift: UInt64 = 0
            while i < b.count { w |= UInt64(b[i]) << shift; shift += 8; i += 1 }
            u64(w)
        }
    }

    /// The digest of a run of bytes (names, the state file).
    static func of(_ b: UnsafeRawBufferPointer) -> UInt64 {
        var d = NftDigest()
        d.raw(b)
        return d.value
    }

    mutating func bytes(_ b: [UInt8]) {
        b.withUnsafeBytes { raw($0) }
    }

    mutating func bytes(_ b: NftBytes) {
        b.withUnsafeBytes { raw($0) }
    }

    mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { raw(UnsafeRawBufferPointer($0)) }
    }

    mutating func optional<T>(_ v: T?, _ feed: (inout NftDigest, T) -> Void) {
        if let v { byte(1); feed(&self, v) } else { byte(0) }
    }

    mutating func register(_ r: NftRegister?) { optional(r) { $0.u32($1.rawValue) } }

    mutating func verdict(_ v: NftVerdict) {
        u32(UInt32(bitPattern: v.code))
        optional(v.chain) { $0.string($1) }
    }

    mutating func expr(_ e: NftExpr) {
        switch e {
        case let .payload(base, offset, len, dreg):
            byte(1); u32(base.rawValue); u32(offset); u32(len); register(dreg)
        case let .meta(key, dreg):
            byte(2); u32(key.rawValue); register(dreg)
        case let .metaSet(key, sreg):
            byte(3); u32(key.rawValue); register(sreg)
        case let .ct(key, dreg, direction):
            byte(4); u32(key.rawValue); register(dreg); optional(direction) { $0.byte($1.rawValue) }
        case let .ctSet(key, sreg):
            byte(5); u32(key.rawValue); register(sreg)
        case let .cmp(op, sreg, data):
            byte(6); u32(op.rawValue); register(sreg); bytes(data)
        case let .bitwise(sreg, dreg, mask, xor):
            byte(7); register(sreg); register(dreg); bytes(mask); bytes(xor)
        case let .byteorder(sreg, dreg, op, len, size):
            byte(8); register(sreg); register(dreg); u32(op.rawValue); u32(len); u32(size)
        case let .lookup(set, sreg, dreg, invert):
            byte(9); string(set); register(sreg); register(dreg); bool(invert)
        case let .immediateData(dreg, data):
            byte(10); register(dreg); bytes(data)
        case let .verdict(v):
            byte(11); verdict(v)
        case let .nat(type, family, addrMin, addrMax, protoMin, protoMax, flags):
            byte(12); u32(type.rawValue); byte(family.netlinkValue)
            register(addrMin); register(addrMax); register(protoMin); register(protoMax); u32(flags.rawValue)
        case let .masq(flags, protoMin, protoMax):
            byte(13); u32(flags.rawValue); register(protoMin); register(protoMax)
        case let .numgen(dreg, modulus, type, offset):
            byte(14); register(dreg); u32(modulus); u32(type.rawValue); u32(offset)
        case let .dynset(op, set, sregKey, sregData, timeoutMs):
            byte(15); u32(op.rawValue); string(set); register(sregKey); register(sregData); optional(timeoutMs) { $0.u64($1) }
        case let .fib(flags, result, dreg):
            byte(16); u32(flags.rawValue); u32(result.rawValue); register(dreg)
        case let .reject(type, code):
            byte(17); u32(type.rawValue); byte(code)
        case .counter:
            byte(18)
        case .notrack:
            byte(19)
        case let .unknown(s):
            byte(20); string(s)
        }
    }

    mutating func rule(_ r: NftRule) {
        int(r.exprs.count)
        for e in r.exprs { expr(e) }
        optional(r.comment) { $0.string($1) }
    }

    mutating func value(_ v: NftValue) {
        u32(v.type.typeId)
        bytes(v.bytes)
    }

    mutating func values(_ vs: [NftValue]) {
        int(vs.count)
        for v in vs { value(v) }
    }

    mutating func element(_ e: NftElement) {
        values(e.key.start)
        optional(e.key.end) { $0.values($1) }
        optional(e.data) { d, data in
            switch data {
            case .verdict(let v): d.byte(1); d.verdict(v)
            case .values(let vs): d.byte(2); d.values(vs)
            }
        }
        optional(e.timeoutMs) { $0.u64($1) }
        optional(e.comment) { $0.string($1) }
    }

    /// A chain: its definition and its rules in order.
    public static func chain(_ c: NftChain) -> UInt64 {
        var d = NftDigest()
        d.string(c.name)
        d.optional(c.base) { d, b in
            d.string(b.type.rawValue); d.string(b.hook.rawValue); d.int(Int(b.priority)); d.string(b.policy.rawValue)
        }
        d.optional(c.comment) { $0.string($1) }
        d.int(c.rules.count)
        for r in c.rules { d.rule(r) }
        return d.value & ~1   // even: a fingerprint's digest is odd
    }

    /// A set or map: its definition and its elements in order.
    public static func set(_ s: NftSet) -> UInt64 {
        var d = NftDigest()
        d.definition(s)
        d.int(s.elements.count)
        for e in s.elements { d.element(e) }
        return d.value & ~1   // even: a fingerprint's digest is odd
    }

    /// The digest of a chain or set with a fingerprint (`NftObjectFingerprints`): it stands for
    /// the content, and is never equal to a content digest (in the last bit) nor to another
    /// kind's. Digests are compared by object name, so the name is not part of it (chains of one
    /// service port share their fingerprint).
    @inline(__always) public static func fingerprinted(_ kind: UInt8, _ print: UInt64) -> UInt64 {
        var d = NftDigest()
        d.u64(0xf1f0_0000 | UInt64(kind))
        d.u64(print)
        return d.value | 1
    }

    /// A set's definition alone (what `NftSet.sameDefinition` compares).
    public static func setDefinition(_ s: NftSet) -> UInt64 {
        var d = NftDigest()
        d.definition(s)
        return d.value
    }

    mutating func definition(_ s: NftSet) {
        string(s.name)
        string(s.key.text)
        optional(s.data) { d, data in
            switch data {
            case .verdict: d.byte(1)
            case .values(let spec): d.byte(2); d.string(spec.text)
            }
        }
        u32(s.flags.rawValue)
        optional(s.timeoutMs) { $0.u64($1) }
        optional(s.size) { $0.u32($1) }
        optional(s.comment) { $0.string($1) }
    }

    /// A table's own attributes (not its chains and sets).
    public static func header(_ t: NftTable) -> UInt64 {
        var d = NftDigest()
        d.byte(t.family.netlinkValue)
        d.string(t.name)
        d.optional(t.comment) { $0.string($1) }
        return d.value
    }
}

/// The digest of every chain of a table, in one byte buffer (per chain: the digest, 8 bytes
/// little-endian, the name's length, 2 bytes, and the name): written to and read from the state
/// file as is, and compared with the desired chains through a table keyed by a hash of the
/// name, so that 100,000 chains cost no String and no String hashing.
public struct NftChainDigests: Sendable, Equatable {
    public private(set) var bytes: [UInt8] = []
    public private(set) var count = 0

    public init() {}

    public init(names: [String], digests: [UInt64]) {
        self.init(count: min(names.count, digests.count), name: { names[$0] }, digest: { digests[$0] })
    }

    /// Takes an encoded buffer; nil if it is not one.
    public init?(bytes: [UInt8]) {
        var n = 0, i = 0
        while i < bytes.count {
            guard i + 10 <= bytes.count else { return nil }
            let len = Int(bytes[i + 8]) | Int(bytes[i + 9]) << 8
            guard i + 10 + len <= bytes.count else { return nil }
            i += 10 + len
            n += 1
        }
        self.bytes = bytes
        count = n
    }

    /// Entries `0..<count`, written in one pass into a buffer of the right size.
    public init(count: Int, name: (Int) -> String, digest: (Int) -> UInt64) {
        var total = 0
        for i in 0..<count { total += 10 + min(name(i).utf8.count, 0xffff) }
        bytes = [UInt8](unsafeUninitializedCapacity: total) { buf, filled in
            filled = 0
            guard let start = buf.baseAddress, total > 0 else { return }
            let base = UnsafeMutableRawPointer(start)
            var at = 0
            for i in 0..<count {
                base.storeBytes(of: digest(i).littleEndian, toByteOffset: at, as: UInt64.self)
                var n = name(i)
                n.withUTF8 { u in
                    let len = min(u.count, 0xffff)
                    base.storeBytes(of: UInt8(len & 0xff), toByteOffset: at + 8, as: UInt8.self)
                    base.storeBytes(of: UInt8(len >> 8), toByteOffset: at + 9, as: UInt8.self)
                    if len > 0 { (base + at + 10).copyMemory(from: u.baseAddress!, byteCount: len) }
                    at += 10 + len
                }
            }
            filled = at
        }
        self.count = count
    }

    public mutating func append(_ name: String, _ digest: UInt64) {
        withUnsafeBytes(of: digest.littleEndian) { bytes.append(contentsOf: $0) }
        var name = name
        name.withUTF8 { u in
            let n = min(u.count, 0xffff)
            bytes.append(UInt8(n & 0xff)); bytes.append(UInt8(n >> 8))
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: u[0..<n]))
        }
        count += 1
    }

    /// Every entry: where it starts, the digest and the name's bytes.
    func forEach(_ body: (_ offset: Int, _ digest: UInt64, _ name: UnsafeRawBufferPointer) -> Void) {
        bytes.withUnsafeBytes { b in
            var i = 0
            while i + 10 <= b.count {
                let d = UInt64(littleEndian: b.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                let len = Int(b[i + 8]) | Int(b[i + 9]) << 8
                body(i, d, UnsafeRawBufferPointer(rebasing: b[(i + 10)..<(i + 10 + len)]))
                i += 10 + len
            }
        }
    }

    /// Name → digest (tests, listings).
    public var dictionary: [String: UInt64] {
        var out: [String: UInt64] = [:]
        forEach { _, d, name in out[String(decoding: name, as: UTF8.self)] = d }
        return out
    }

    /// A 64-bit hash of a name's bytes (the lookup key; entries are confirmed by comparing bytes).
    static func nameHash(_ b: UnsafeRawBufferPointer) -> UInt64 { NftDigest.of(b) }

    /// Compares with the desired chains (`names`, `digests` aligned): which desired chains are
    /// unchanged (same name and digest), and the names of the saved chains that differ or are
    /// no longer desired, with the indices of the desired ones among them. Desired chains that
    /// are new are neither. nil when the list cannot be trusted (a name listed twice, or two
    /// names with the same hash) or `digests` does not match `names`.
    public func compare(names: [String], digests: [UInt64]) -> (unchanged: [Bool], changed: Set<String>, changedDesired: [Int])? {
        guard names.count == digests.count else { return nil }
        var index: [UInt64: (offset: Int, digest: UInt64, entry: Int)] = [:]
        index.reserveCapacity(count)
        var entry = 0, clash = false
        forEach { offset, d, name in
            if index.updateValue((offset, d, entry), forKey: Self.nameHash(name)) != nil { clash = true }
            entry += 1
        }
        guard !clash else { return nil }
        var seen = [Bool](repeating: false, count: count)
        var unchanged = [Bool](repeating: false, count: names.count)
        var changed = Set<String>()
        var changedDesired: [Int] = []
        bytes.withUnsafeBytes { b in
            for i in names.indices {
                var name = names[i]
                let found: (offset: Int, digest: UInt64, entry: Int)? = name.withUTF8 { u in
                    guard let e = index[Self.nameHash(UnsafeRawBufferPointer(u))] else { return nil }
                    let len = Int(b[e.offset + 8]) | Int(b[e.offset + 9]) << 8
                    guard len == u.count, memcmp(b.baseAddress! + e.offset + 10, u.baseAddress!, len) == 0 else { return nil }
                    return e
                }
                guard let e = found else { continue }
                seen[e.entry] = true
                if e.digest == digests[i] { unchanged[i] = true } else { changed.insert(name); changedDesired.append(i) }
            }
        }
        entry = 0
        forEach { _, _, name in
            if !seen[entry] { changed.insert(String(decoding: name, as: UTF8.self)) }
            entry += 1
        }
        return (unchanged, changed, changedDesired)
    }
}

/// The digests of one table: what `apply` committed, saved for the next run.
public struct NftTableDigests: Sendable, Equatable {
    public var header: UInt64
    /// The chain digests; empty while `chainsLoaded` is false (a saved state read without
    /// them: `storedChainsDigest` stands for them).
    public var chains: NftChainDigests
    public var chainsLoaded = true
    /// The digest of `chains.bytes` as stored, for chains not loaded.
    public var storedChainsDigest: UInt64 = 0
    public var sets: [String: UInt64]
    /// The desired table's chain digests, in its chain order (not saved).
    public var chainOrder: [UInt64] = []
    /// The fingerprint the table was built with (`NftRuleset.fingerprints`), if any.
    public var fingerprint: UInt64?
    /// The digest of the state file part these digests were loaded from (`NftStateFile`); not
    /// part of the value.
    public var part: UInt64?

    public init(header: UInt64, chains: NftChainDigests = NftChainDigests(), sets: [String: UInt64] = [:]) {
        self.header = header
        self.chains = chains
        self.sets = sets
    }

    /// The digests of `t`; a chain or set with a fingerprint in `prints` is digested as its
    /// fingerprint (`NftDigest.fingerprinted`), without walking its rules or elements.
    public init(_ t: NftTable, prints: NftObjectFingerprints? = nil) {
        header = NftDigest.header(t)
        let p = prints ?? NftObjectFingerprints()
        let chainOrder = Self.digests(t.chains, names: p.chainNames, prints: p.chains, kind: 1, minimumCount: 2048,
                                      name: { $0.name }, content: NftDigest.chain)
        self.chainOrder = chainOrder
        // One set (a hairpin set) can hold 100,000 elements.
        let s = Self.digests(t.sets, names: p.setNames, prints: p.sets, kind: 2, minimumCount: 64,
                             name: { $0.name }, content: NftDigest.set)
        chains = t.chains.withUnsafeBufferPointer { c in NftChainDigests(count: c.count, name: { c[$0].name }, digest: { chainOrder[$0] }) }
        var d = [String: UInt64](minimumCapacity: t.sets.count)
        for i in t.sets.indices { d[t.sets[i].name] = s[i] }
        sets = d
    }

    /// The digest of each of `objects`: its fingerprint's where `prints` (aligned, checked by
    /// name) has one, else its content's. In runs handed to whichever core is free; on this core
    /// alone when every object may have a fingerprint (then an object costs a few multiplies).
    static func digests<T>(_ objects: [T], names: [String], prints: [UInt64], kind: UInt8, minimumCount: Int,
                           name: (T) -> String, content: (T) -> UInt64) -> [UInt64] {
        objects.withUnsafeBufferPointer { objects in
            names.withUnsafeBufferPointer { names in
                prints.withUnsafeBufferPointer { prints in
                    Parallel.mapRuns(count: objects.count, minimumCount: prints.count == objects.count ? Int.max : minimumCount) { run in
                        run.map { i -> UInt64 in
                            if i < prints.count, i < names.count, prints[i] != 0, names[i] == name(objects[i]) {
                                return NftDigest.fingerprinted(kind, prints[i])
                            }
                            return content(objects[i])
                        }
                    }.flatMap { $0 }
                }
            }
        }
    }

    /// The digest of the chain digests (`NftDigest.of(chains.bytes)`): two tables whose chain
    /// lists give the same one have the same chains with the same digests, in the same order.
    public var chainsDigest: UInt64 {
        chainsLoaded ? chains.bytes.withUnsafeBytes { NftDigest.of($0) } : storedChainsDigest
    }

    public static func == (a: NftTableDigests, b: NftTableDigests) -> Bool {
        a.header == b.header && a.chainsDigest == b.chainsDigest && a.sets == b.sets && a.fingerprint == b.fingerprint
    }
}
