import NftModel
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

    mutating func bytes(_ b: [UInt8]) {
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
        return d.value
    }

    /// A set or map: its definition and its elements in order.
    public static func set(_ s: NftSet) -> UInt64 {
        var d = NftDigest()
        d.definition(s)
        d.int(s.elements.count)
        for e in s.elements { d.element(e) }
        return d.value
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

/// The digests of one table: what `apply` committed, saved for the next run.
public struct NftTableDigests: Sendable, Equatable {
    public var header: UInt64
    public var chains: [String: UInt64]
    public var sets: [String: UInt64]

    public init(header: UInt64, chains: [String: UInt64] = [:], sets: [String: UInt64] = [:]) {
        self.header = header
        self.chains = chains
        self.sets = sets
    }

    public init(_ t: NftTable) {
        header = NftDigest.header(t)
        let c = Parallel.map(count: t.chains.count, minimumPerTask: 1024) { NftDigest.chain(t.chains[$0]) }
        let s = Parallel.map(count: t.sets.count, minimumPerTask: 64) { NftDigest.set(t.sets[$0]) }
        chains = Dictionary(zip(t.chains.map(\.name), c), uniquingKeysWith: { a, _ in a })
        sets = Dictionary(zip(t.sets.map(\.name), s), uniquingKeysWith: { a, _ in a })
    }
}
