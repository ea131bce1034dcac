import NftModel

/// nftnl userdata TLVs (1-byte type, 1-byte length, value; nests are TLVs of TLVs), written
/// exactly as nft 1.0.x writes them so that `nft list` shows comments and `typeof` keys.
struct Udata {
    var bytes: [UInt8] = []

    mutating func u32(_ type: UInt8, _ v: UInt32) {
        bytes += [type, 4] + NftValue.hostBytes(v)
    }

    mutating func strz(_ type: UInt8, _ s: String) {
        let b = Array(s.utf8) + [0]
        bytes += [type, UInt8(truncatingIfNeeded: b.count)] + b
    }

    mutating func nest(_ type: UInt8, _ body: (inout Udata) -> Void) {
        var inner = Udata()
        body(&inner)
        bytes += [type, UInt8(truncatingIfNeeded: inner.bytes.count)] + inner.bytes
    }

    /// Parses one level of TLVs.
    static func parse(_ b: ArraySlice<UInt8>) -> [(type: UInt8, value: ArraySlice<UInt8>)] {
        var out: [(UInt8, ArraySlice<UInt8>)] = []
        var i = b.startIndex
        while i + 2 <= b.endIndex {
            let t = b[i], l = Int(b[i + 1])
            guard i + 2 + l <= b.endIndex else { break }
            out.append((t, b[(i + 2)..<(i + 2 + l)]))
            i += 2 + l
        }
        return out
    }

    static func value(_ b: ArraySlice<UInt8>, _ type: UInt8) -> ArraySlice<UInt8>? {
        parse(b).first { $0.type == type }?.value
    }

    static func u32(_ b: ArraySlice<UInt8>?) -> UInt32? {
        guard let b, b.count == 4 else { return nil }
        return NftValue.hostUInt32(b)
    }

    static func string(_ b: ArraySlice<UInt8>?) -> String? {
        guard let b else { return nil }
        return String(decoding: b.prefix { $0 != 0 }, as: UTF8.self)
    }

    // MARK: comments (tables, chains, rules, elements: type 0)

    static func comment(_ c: String?) -> [UInt8]? {
        guard let c else { return nil }
        var u = Udata()
        u.strz(0, c)
        return u.bytes
    }

    static func parseComment(_ b: [UInt8]?) -> String? {
        guard let b else { return nil }
        return string(value(b[...], 0))
    }

    // MARK: sets

    // NFTNL_UDATA_SET_*
    static let keyByteOrder: UInt8 = 0, dataByteOrder: UInt8 = 1, keyTypeof: UInt8 = 3, dataTypeof: UInt8 = 4,
               dataInterval: UInt8 = 6, setComment: UInt8 = 7
    // nft expression type ids (enum expr_types in nft 1.0.x)
    static let exprPayload: UInt32 = 7, exprMeta: UInt32 = 9, exprCt: UInt32 = 12, exprConcat: UInt32 = 13,
               exprNumgen: UInt32 = 23, exprFib: UInt32 = 26

    /// Userdata of a set, as nft writes it.
    static func set(_ s: NftSet) -> [UInt8] {
        var u = Udata()
        u.u32(keyByteOrder, s.key.byteOrder.rawValue)
        if let d = s.data {
            switch d {
            case .verdict: u.u32(dataByteOrder, NftByteOrder.invalid.rawValue)
            case .values(let spec): u.u32(dataByteOrder, spec.byteOrder.rawValue)
            }
        }
        typeofNest(&u, keyTypeof, s.key)
        if case .values(let spec)? = s.data { typeofNest(&u, dataTypeof, spec) }
        if s.data != nil { u.u32(dataInterval, 0) }
        if let c = s.comment { u.strz(setComment, c) }
        return u.bytes
    }

    private static func typeofNest(_ u: inout Udata, _ type: UInt8, _ spec: NftTypeSpec) {
        switch spec {
        case .types(let t):
            // nft records a concatenation of plain types as an empty concat expression.
            guard t.count > 1 else { return }
            u.nest(type) { n in
                n.u32(0, exprConcat)
                n.nest(1) { _ in }
            }
        case .typeof(let fields):
            u.nest(type) { n in
                if fields.count == 1 {
                    n.u32(0, exprType(fields[0]))
                    n.nest(1) { exprData(&$0, fields[0]) }
                } else {
                    n.u32(0, exprConcat)
                    n.nest(1) { c in
                        for (i, f) in fields.enumerated() {
                            c.nest(UInt8(i)) { e in
                                e.u32(0, exprType(f))
                                e.nest(1) { exprData(&$0, f) }
                            }
                        }
                    }
                }
            }
        }
    }

    private static func exprType(_ f: NftField) -> UInt32 {
        switch f {
        case .meta: return exprMeta
        case .ct: return exprCt
        case .numgen: return exprNumgen
        case .fib: return exprFib
        default: return exprPayload
        }
    }

    /// (proto_desc id, template field) of payload fields in nft.
    private static let payloadIDs: [(NftField, UInt32, UInt32)] = [
        (.ipSaddr, 12, 11), (.ipDaddr, 12, 12), (.ipProtocol, 12, 9),
        (.ip6Saddr, 13, 8), (.ip6Daddr, 13, 9), (.ip6Nexthdr, 13, 6),
        (.thSport, 11, 1), (.thDport, 11, 2),
        (.tcpSport, 8, 1), (.tcpDport, 8, 2), (.udpSport, 6, 1), (.udpDport, 6, 2),
        (.sctpSport, 10, 1), (.sctpDport, 10, 2),
    ]

    private static func exprData(_ u: inout Udata, _ f: NftField) {
        switch f {
        case .meta(let k): u.u32(0, k.rawValue)
        case .ct(let k, let d):
            u.u32(0, k.rawValue)
            u.u32(1, d.map { UInt32($0.rawValue) } ?? 0xffff_ffff)
        case .numgen(let t, let m, let o):
            u.u32(0, t.rawValue)
            u.u32(1, m)
            u.u32(2, o)
        case .fib(let flags, let r):
            u.u32(0, r.rawValue)
            u.u32(1, flags.rawValue)
        default:
            if let (_, desc, field) = payloadIDs.first(where: { $0.0 == f }) {
                u.u32(0, desc)
                u.u32(1, field)
            }
        }
    }

    private static func field(etype: UInt32, data: ArraySlice<UInt8>) -> NftField? {
        switch etype {
        case exprMeta:
            return u32(value(data, 0)).flatMap { NftMetaKey(rawValue: $0) }.map { .meta($0) }
        case exprCt:
            guard let k = u32(value(data, 0)).flatMap({ NftCtKey(rawValue: $0) }) else { return nil }
            let d = u32(value(data, 1)).flatMap { $0 == 0xffff_ffff ? nil : NftCtDirection(rawValue: UInt8($0)) }
            return .ct(k, d)
        case exprNumgen:
            guard let t = u32(value(data, 0)).flatMap({ NftNumgenType(rawValue: $0) }), let m = u32(value(data, 1)) else { return nil }
            return .numgen(t, modulus: m, offset: u32(value(data, 2)) ?? 0)
        case exprFib:
            guard let r = u32(value(data, 0)).flatMap({ NftFibResult(rawValue: $0) }), let f = u32(value(data, 1)) else { return nil }
            return .fib(NftFibFlags(rawValue: f), r)
        case exprPayload:
            guard let desc = u32(value(data, 0)), let fld = u32(value(data, 1)) else { return nil }
            return payloadIDs.first { $0.1 == desc && $0.2 == fld }?.0
        default:
            return nil
        }
    }

    /// The typeof fields recorded in a set's userdata nest, nil if absent or a plain concat.
    static func typeofFields(_ b: [UInt8]?, _ type: UInt8) -> [NftField]? {
        guard let b, let nest = value(b[...], type), let etype = u32(value(nest, 0)), let data = value(nest, 1) else { return nil }
        if etype == exprConcat {
            let parts = parse(data)
            if parts.isEmpty { return nil }
            var out: [NftField] = []
            for p in parts {
                guard let et = u32(value(p.value, 0)), let d = value(p.value, 1), let f = field(etype: et, data: d) else { return nil }
                out.append(f)
            }
            return out
        }
        return field(etype: etype, data: data).map { [$0] }
    }
}
