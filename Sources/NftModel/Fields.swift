// Loadable values: packet fields, meta/ct keys, numgen and fib results.

/// Something an expression loads into a register: a packet header field, a meta or ct key,
/// a numgen or a fib result. Used by builders (`.match(.ipDaddr, .eq, …)`) and by
/// `typeof` set declarations.
public enum NftField: Sendable, Hashable {
    case ipSaddr, ipDaddr, ipProtocol
    case ip6Saddr, ip6Daddr, ip6Nexthdr
    /// Transport header ports with no protocol dependency (`th dport`).
    case thSport, thDport
    /// Protocol-specific ports: builders emit the `meta l4proto X` dependency first, as nft does.
    case tcpSport, tcpDport, udpSport, udpDport, sctpSport, sctpDport
    case meta(NftMetaKey)
    case ct(NftCtKey, NftCtDirection?)
    case numgen(NftNumgenType, modulus: UInt32, offset: UInt32)
    case fib(NftFibFlags, NftFibResult)

    public static let l4proto = NftField.meta(.l4proto)
    public static let nfproto = NftField.meta(.nfproto)
    public static let mark = NftField.meta(.mark)
    public static let iifname = NftField.meta(.iifname)
    public static let oifname = NftField.meta(.oifname)
    public static let ctState = NftField.ct(.state, nil)
    public static let ctStatus = NftField.ct(.status, nil)
    public static let ctMark = NftField.ct(.mark, nil)
    /// `fib daddr type`
    public static let fibDaddrType = NftField.fib(.daddr, .addrType)

    /// `numgen random mod N [offset O]`
    public static func numgenRandom(mod: UInt32, offset: UInt32 = 0) -> NftField {
        .numgen(.random, modulus: mod, offset: offset)
    }

    /// `numgen inc mod N [offset O]`
    public static func numgenInc(mod: UInt32, offset: UInt32 = 0) -> NftField {
        .numgen(.incremental, modulus: mod, offset: offset)
    }

    /// Source and destination address of a family (ip / ip6).
    public static func saddr(_ f: NftFamily) -> NftField { f == .ip6 ? .ip6Saddr : .ipSaddr }
    public static func daddr(_ f: NftFamily) -> NftField { f == .ip6 ? .ip6Daddr : .ipDaddr }

    public var dataType: NftDataType {
        switch self {
        case .ipSaddr, .ipDaddr: return .ipv4Addr
        case .ip6Saddr, .ip6Daddr: return .ipv6Addr
        case .ipProtocol, .ip6Nexthdr: return .inetProto
        case .thSport, .thDport, .tcpSport, .tcpDport, .udpSport, .udpDport, .sctpSport, .sctpDport: return .inetService
        case .meta(let k): return k.dataType
        case .ct(let k, _): return k.dataType
        case .numgen: return .integer(bytes: 4)
        case .fib(_, let r):
            switch r {
            case .addrType: return .fibAddrType
            case .oifname: return .ifname
            case .oif: return .integer(bytes: 4)
            }
        }
    }

    /// Whether the loaded value is host-endian (nft converts these with byteorder inside
    /// concatenated interval lookups).
    var isHostEndianLoad: Bool {
        switch self {
        case .meta(let k): return k == .l4proto || k.dataType.byteOrder == .host
        case .ct(let k, _): return k.dataType.byteOrder == .host
        case .numgen, .fib: return true
        default: return false
        }
    }

    /// (base, offset, length) for packet header fields.
    public var payloadLocation: (base: NftPayloadBase, offset: UInt32, len: UInt32)? {
        switch self {
        case .ipSaddr: return (.network, 12, 4)
        case .ipDaddr: return (.network, 16, 4)
        case .ipProtocol: return (.network, 9, 1)
        case .ip6Saddr: return (.network, 8, 16)
        case .ip6Daddr: return (.network, 24, 16)
        case .ip6Nexthdr: return (.network, 6, 1)
        case .thSport, .tcpSport, .udpSport, .sctpSport: return (.transport, 0, 2)
        case .thDport, .tcpDport, .udpDport, .sctpDport: return (.transport, 2, 2)
        default: return nil
        }
    }

    /// The protocol match nft inserts before loading this field (`tcp dport` needs `meta l4proto tcp`).
    public var l4Dependency: NftL4Proto? {
        switch self {
        case .tcpSport, .tcpDport: return .tcp
        case .udpSport, .udpDport: return .udp
        case .sctpSport, .sctpDport: return .sctp
        default: return nil
        }
    }

    /// The expression loading this field into `reg`.
    public func load(into reg: NftRegister) -> NftExpr {
        if let loc = payloadLocation {
            return .payload(base: loc.base, offset: loc.offset, len: loc.len, dreg: reg)
        }
        switch self {
        case .meta(let k): return .meta(key: k, dreg: reg)
        case .ct(let k, let d): return .ct(key: k, dreg: reg, direction: d)
        case .numgen(let t, let m, let o): return .numgen(dreg: reg, modulus: m, type: t, offset: o)
        case .fib(let f, let r): return .fib(flags: f, result: r, dreg: reg)
        default: preconditionFailure("unreachable: payload fields handled above")
        }
    }

    /// nft text of the field.
    public var text: String {
        switch self {
        case .ipSaddr: return "ip saddr"
        case .ipDaddr: return "ip daddr"
        case .ipProtocol: return "ip protocol"
        case .ip6Saddr: return "ip6 saddr"
        case .ip6Daddr: return "ip6 daddr"
        case .ip6Nexthdr: return "ip6 nexthdr"
        case .thSport: return "th sport"
        case .thDport: return "th dport"
        case .tcpSport: return "tcp sport"
        case .tcpDport: return "tcp dport"
        case .udpSport: return "udp sport"
        case .udpDport: return "udp dport"
        case .sctpSport: return "sctp sport"
        case .sctpDport: return "sctp dport"
        case .meta(let k):
            switch k {
            case .iifname, .oifname, .mark, .iif, .oif: return "meta \(k.name)"
            default: return "meta \(k.name)"
            }
        case .ct(let k, let d):
            if let d { return "ct \(d == .original ? "original" : "reply") \(k.name)" }
            return "ct \(k.name)"
        case .numgen(let t, let m, let o):
            return "numgen \(t.text) mod \(m)" + (o != 0 ? " offset \(o)" : "")
        case .fib(let f, let r):
            var words: [String] = []
            if f.contains(.saddr) { words.append("saddr") }
            if f.contains(.daddr) { words.append("daddr") }
            if f.contains(.mark) { words.append("mark") }
            if f.contains(.iif) { words.append("iif") }
            if f.contains(.oif) { words.append("oif") }
            let res: String
            switch r {
            case .addrType: res = "type"
            case .oif: res = "oif"
            case .oifname: res = "oifname"
            }
            return "fib " + words.joined(separator: " . ") + " " + res
        }
    }

    /// Registers (32-bit words) occupied by this field in a concatenation.
    var registerWords: Int { dataType.paddedLength / 4 }
}

extension NftRegister {
    /// nft's register for 32-bit word `slot`: the 128-bit register when the slot is aligned
    /// on one, a 32-bit register otherwise (this is also how the kernel dumps registers).
    public static func at(slot: Int) -> NftRegister {
        slot % 4 == 0 ? NftRegister(rawValue: UInt32(1 + slot / 4)) : NftRegister(rawValue: UInt32(8 + slot))
    }
}
