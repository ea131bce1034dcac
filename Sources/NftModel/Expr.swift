// Netlink-shaped expressions: each case is exactly one kernel expression (NFTA_EXPR_*).

/// An nftables register. Raw values are the netlink numbers: 0 is the verdict register,
/// 1…4 are the 128-bit registers, 8…23 the 32-bit registers (NFT_REG32_00…15), which
/// overlap them (reg 1 == reg32 00…03).
public struct NftRegister: RawRepresentable, Sendable, Hashable, Comparable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let verdict = NftRegister(rawValue: 0)
    public static let r1 = NftRegister(rawValue: 1)
    public static let r2 = NftRegister(rawValue: 2)
    public static let r3 = NftRegister(rawValue: 3)
    public static let r4 = NftRegister(rawValue: 4)

    /// The register for 32-bit word `slot` (0…15), in canonical form (see `at(slot:)`).
    public static func word(_ slot: Int) -> NftRegister {
        precondition(slot >= 0 && slot < 16, "register slot out of range")
        return .at(slot: slot)
    }

    /// The first 32-bit word this register addresses (nil for the verdict register).
    public var slot: Int? {
        switch rawValue {
        case 1...4: return Int(rawValue - 1) * 4
        case 8...23: return Int(rawValue - 8)
        default: return nil
        }
    }

    public static func < (a: NftRegister, b: NftRegister) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "reg \(rawValue)" }
}

public enum NftVerdict: Sendable, Hashable, CustomStringConvertible {
    case accept, drop, `continue`, `return`, `break`
    case jump(String)
    case goto(String)

    /// NF_* / NFT_* verdict code.
    public var code: Int32 {
        switch self {
        case .drop: return 0
        case .accept: return 1
        case .continue: return -1
        case .break: return -2
        case .jump: return -3
        case .goto: return -4
        case .return: return -5
        }
    }

    public var chain: String? {
        switch self {
        case .jump(let c), .goto(let c): return c
        default: return nil
        }
    }

    public init?(code: Int32, chain: String?) {
        switch code {
        case 0: self = .drop
        case 1: self = .accept
        case -1: self = .continue
        case -2: self = .break
        case -3: guard let chain else { return nil }; self = .jump(chain)
        case -4: guard let chain else { return nil }; self = .goto(chain)
        case -5: self = .return
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .accept: return "accept"
        case .drop: return "drop"
        case .continue: return "continue"
        case .return: return "return"
        case .break: return "break"
        case .jump(let c): return "jump \(NftText.name(c))"
        case .goto(let c): return "goto \(NftText.name(c))"
        }
    }
}

public enum NftPayloadBase: UInt32, Sendable, Hashable {
    case link = 0, network = 1, transport = 2
    var text: String {
        switch self {
        case .link: return "link"
        case .network: return "network"
        case .transport: return "transport"
        }
    }
}

public enum NftCmpOp: UInt32, Sendable, Hashable {
    case eq = 0, neq, lt, lte, gt, gte

    public var text: String {
        switch self {
        case .eq: return "=="
        case .neq: return "!="
        case .lt: return "<"
        case .lte: return "<="
        case .gt: return ">"
        case .gte: return ">="
        }
    }
}

/// NFT_META_* keys (the subset kuberules uses, plus a few common ones).
public enum NftMetaKey: UInt32, Sendable, Hashable, CaseIterable {
    case len = 0, `protocol` = 1, priority = 2, mark = 3, iif = 4, oif = 5, iifname = 6, oifname = 7,
         iiftype = 8, oiftype = 9, skuid = 10, skgid = 11, nfproto = 15, l4proto = 16, pkttype = 19

    public var name: String {
        switch self {
        case .len: return "length"
        case .protocol: return "protocol"
        case .priority: return "priority"
        case .mark: return "mark"
        case .iif: return "iif"
        case .oif: return "oif"
        case .iifname: return "iifname"
        case .oifname: return "oifname"
        case .iiftype: return "iiftype"
        case .oiftype: return "oiftype"
        case .skuid: return "skuid"
        case .skgid: return "skgid"
        case .nfproto: return "nfproto"
        case .l4proto: return "l4proto"
        case .pkttype: return "pkttype"
        }
    }

    /// Datatype of the loaded value.
    public var dataType: NftDataType {
        switch self {
        case .mark: return .mark
        case .iifname, .oifname: return .ifname
        case .nfproto: return .nfproto
        case .l4proto: return .inetProto
        case .pkttype: return .integer(bytes: 1)
        case .iiftype, .oiftype: return .integer(bytes: 2)
        default: return .integer(bytes: 4)
        }
    }
}

/// NFT_CT_* keys.
public enum NftCtKey: UInt32, Sendable, Hashable {
    case state = 0, direction = 1, status = 2, mark = 3, expiration = 5, l3protocol = 7,
         `protocol` = 10, protoSrc = 11, protoDst = 12, zone = 17, srcIP = 19, dstIP = 20, srcIP6 = 21, dstIP6 = 22

    public var name: String {
        switch self {
        case .state: return "state"
        case .direction: return "direction"
        case .status: return "status"
        case .mark: return "mark"
        case .expiration: return "expiration"
        case .l3protocol: return "l3proto"
        case .protocol: return "protocol"
        case .protoSrc: return "proto-src"
        case .protoDst: return "proto-dst"
        case .zone: return "zone"
        case .srcIP: return "ip saddr"
        case .dstIP: return "ip daddr"
        case .srcIP6: return "ip6 saddr"
        case .dstIP6: return "ip6 daddr"
        }
    }

    public var dataType: NftDataType {
        switch self {
        case .state: return .ctState
        case .direction: return .ctDirection
        case .status: return .ctStatus
        case .mark: return .mark
        case .l3protocol: return .nfproto
        case .protocol: return .inetProto
        case .protoSrc, .protoDst: return .inetService
        case .srcIP, .dstIP: return .ipv4Addr
        case .srcIP6, .dstIP6: return .ipv6Addr
        case .expiration, .zone: return .integer(bytes: 4)
        }
    }

    /// True for keys that need a direction (original/reply).
    public var needsDirection: Bool {
        switch self {
        case .protoSrc, .protoDst, .srcIP, .dstIP, .srcIP6, .dstIP6, .l3protocol, .protocol: return true
        default: return false
        }
    }
}

public enum NftCtDirection: UInt8, Sendable, Hashable {
    case original = 0, reply = 1
}

public enum NftNatType: UInt32, Sendable, Hashable {
    case snat = 0, dnat = 1
}

/// NF_NAT_RANGE_* flags.
public struct NftNatFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let mapIPs = NftNatFlags(rawValue: 0x1)
    public static let protoSpecified = NftNatFlags(rawValue: 0x2)
    public static let random = NftNatFlags(rawValue: 0x4)
    public static let persistent = NftNatFlags(rawValue: 0x8)
    public static let fullyRandom = NftNatFlags(rawValue: 0x10)
    public static let netmap = NftNatFlags(rawValue: 0x40)

    /// The flags nft can express as words (`random`, `fully-random`, `persistent`).
    var words: [String] {
        var w: [String] = []
        if contains(.random) { w.append("random") }
        if contains(.fullyRandom) { w.append("fully-random") }
        if contains(.persistent) { w.append("persistent") }
        return w
    }
}

public enum NftNumgenType: UInt32, Sendable, Hashable {
    case incremental = 0, random = 1
    var text: String { self == .random ? "random" : "inc" }
}

public enum NftDynsetOp: UInt32, Sendable, Hashable {
    case add = 0, update = 1, delete = 2
    var text: String {
        switch self {
        case .add: return "add"
        case .update: return "update"
        case .delete: return "delete"
        }
    }
}

/// NFTA_FIB_F_* flags.
public struct NftFibFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let saddr = NftFibFlags(rawValue: 1)
    public static let daddr = NftFibFlags(rawValue: 2)
    public static let mark = NftFibFlags(rawValue: 4)
    public static let iif = NftFibFlags(rawValue: 8)
    public static let oif = NftFibFlags(rawValue: 16)
    public static let present = NftFibFlags(rawValue: 32)
}

public enum NftFibResult: UInt32, Sendable, Hashable {
    case oif = 1, oifname = 2, addrType = 3
}

public enum NftRejectType: UInt32, Sendable, Hashable {
    case icmpUnreach = 0, tcpReset = 1, icmpxUnreach = 2
}

public enum NftByteorderOp: UInt32, Sendable, Hashable {
    case ntoh = 0, hton = 1
}

/// One kernel expression. Field names follow the netlink attributes.
public enum NftExpr: Sendable, Hashable {
    /// `payload load <len>b @ <base> header + <offset> => dreg`
    case payload(base: NftPayloadBase, offset: UInt32, len: UInt32, dreg: NftRegister)
    /// `meta load <key> => dreg`
    case meta(key: NftMetaKey, dreg: NftRegister)
    /// `meta set <key> with sreg`
    case metaSet(key: NftMetaKey, sreg: NftRegister)
    /// `ct load <key> => dreg [, dir]`
    case ct(key: NftCtKey, dreg: NftRegister, direction: NftCtDirection?)
    /// `ct set <key> with sreg`
    case ctSet(key: NftCtKey, sreg: NftRegister)
    /// `cmp <op> sreg data`
    case cmp(op: NftCmpOp, sreg: NftRegister, data: NftBytes)
    /// `bitwise dreg = (sreg & mask) ^ xor` over `mask.count` bytes.
    case bitwise(sreg: NftRegister, dreg: NftRegister, mask: NftBytes, xor: NftBytes)
    /// `byteorder dreg = op(sreg, size, len)`
    case byteorder(sreg: NftRegister, dreg: NftRegister, op: NftByteorderOp, len: UInt32, size: UInt32)
    /// `lookup sreg set <name> [dreg] [invert]`; dreg `.verdict` for verdict maps.
    case lookup(set: String, sreg: NftRegister, dreg: NftRegister?, invert: Bool)
    /// `immediate dreg data` (data register).
    case immediateData(dreg: NftRegister, data: NftBytes)
    /// `immediate reg 0 <verdict>`
    case verdict(NftVerdict)
    case nat(type: NftNatType, family: NftFamily, addrMin: NftRegister?, addrMax: NftRegister?,
             protoMin: NftRegister?, protoMax: NftRegister?, flags: NftNatFlags)
    case masq(flags: NftNatFlags, protoMin: NftRegister?, protoMax: NftRegister?)
    case numgen(dreg: NftRegister, modulus: UInt32, type: NftNumgenType, offset: UInt32)
    /// Add/update/delete the key in sregKey (data in sregData for maps) into a set from the packet path.
    case dynset(op: NftDynsetOp, set: String, sregKey: NftRegister, sregData: NftRegister?, timeoutMs: UInt64?)
    case fib(flags: NftFibFlags, result: NftFibResult, dreg: NftRegister)
    case reject(type: NftRejectType, code: UInt8)
    /// A counter; its packet/byte counts are kernel state and not part of the value.
    case counter
    case notrack
    /// A kernel expression kuberules does not model (only ever produced by decoding a dump);
    /// it never equals a desired expression, so its chain is rewritten.
    case unknown(String)

    /// The kernel expression name (NFTA_EXPR_NAME).
    public var kernelName: String {
        switch self {
        case .payload: return "payload"
        case .meta, .metaSet: return "meta"
        case .ct, .ctSet: return "ct"
        case .cmp: return "cmp"
        case .bitwise: return "bitwise"
        case .byteorder: return "byteorder"
        case .lookup: return "lookup"
        case .immediateData, .verdict: return "immediate"
        case .nat: return "nat"
        case .masq: return "masq"
        case .numgen: return "numgen"
        case .dynset: return "dynset"
        case .fib: return "fib"
        case .reject: return "reject"
        case .counter: return "counter"
        case .notrack: return "notrack"
        case .unknown(let n): return n
        }
    }

    /// Chains referenced by this expression (jump/goto).
    public var referencedChain: String? {
        if case .verdict(let v) = self { return v.chain }
        return nil
    }

    /// Set referenced by this expression.
    public var referencedSet: String? {
        switch self {
        case .lookup(let s, _, _, _), .dynset(_, let s, _, _, _): return s
        default: return nil
        }
    }

    /// `nft --debug=netlink`-style text of the expression (for diagnostics and diff listings).
    public var debugText: String {
        func regs(_ d: NftBytes) -> String {
            stride(from: 0, to: d.count, by: 4).map { i -> String in
                let w = Array(d[i..<min(i + 4, d.count)])
                return NftFormat.hex32(NftValue.hostUInt32(w))
            }.joined(separator: " ")
        }
        switch self {
        case .payload(let b, let o, let l, let r): return "[ payload load \(l)b @ \(b.text) header + \(o) => \(r) ]"
        case .meta(let k, let r): return "[ meta load \(k.name) => \(r) ]"
        case .metaSet(let k, let r): return "[ meta set \(k.name) with \(r) ]"
        case .ct(let k, let r, let d): return "[ ct load \(k.name) => \(r)\(d.map { ", dir \($0 == .original ? "original" : "reply")" } ?? "") ]"
        case .ctSet(let k, let r): return "[ ct set \(k.name) with \(r) ]"
        case .cmp(let op, let r, let d): return "[ cmp \(op) \(r) \(regs(d)) ]"
        case .bitwise(let s, let d, let m, let x): return "[ bitwise \(d) = ( \(s) & \(regs(m)) ) ^ \(regs(x)) ]"
        case .byteorder(let s, let d, let op, let l, let sz): return "[ byteorder \(d) = \(op == .hton ? "hton" : "ntoh")(\(s), \(sz), \(l)) ]"
        case .lookup(let set, let s, let d, let inv):
            return "[ lookup \(s) set \(set)\(d.map { " dreg \($0.rawValue)" } ?? "")\(inv ? " 0x1" : "") ]"
        case .immediateData(let r, let d): return "[ immediate \(r) \(regs(d)) ]"
        case .verdict(let v):
            switch v {
            case .jump(let c): return "[ immediate reg 0 jump -> \(c) ]"
            case .goto(let c): return "[ immediate reg 0 goto -> \(c) ]"
            default: return "[ immediate reg 0 \(v) ]"
            }
        case .nat(let t, let f, let amin, let amax, let pmin, let pmax, let flags):
            var s = "[ nat \(t == .dnat ? "dnat" : "snat") \(f.rawValue)"
            if let amin { s += " addr_min \(amin)" }
            if let amax { s += " addr_max \(amax)" }
            if let pmin { s += " proto_min \(pmin)" }
            if let pmax { s += " proto_max \(pmax)" }
            if flags.rawValue != 0 { s += " flags 0x\(String(flags.rawValue, radix: 16))" }
            return s + " ]"
        case .masq(let flags, let pmin, let pmax):
            var s = "[ masq"
            if flags.rawValue != 0 { s += " flags 0x\(String(flags.rawValue, radix: 16))" }
            if let pmin { s += " proto_min \(pmin)" }
            if let pmax { s += " proto_max \(pmax)" }
            return s + " ]"
        case .numgen(let r, let m, let t, let o): return "[ numgen \(r) = \(t.text) mod \(m)\(o != 0 ? " offset \(o)" : "") ]"
        case .dynset(let op, let set, let k, let d, let t):
            return "[ dynset \(op.text) reg_key \(k.rawValue) set \(set)\(d.map { " sreg_data \($0.rawValue)" } ?? "")\(t.map { " timeout \($0)ms" } ?? "") ]"
        case .fib(let f, let res, let r):
            var w: [String] = []
            if f.contains(.saddr) { w.append("saddr") }
            if f.contains(.daddr) { w.append("daddr") }
            if f.contains(.mark) { w.append("mark") }
            if f.contains(.iif) { w.append("iif") }
            if f.contains(.oif) { w.append("oif") }
            if f.contains(.present) { w.append("present") }
            let rs = res == .addrType ? "type" : (res == .oif ? "oif" : "oifname")
            return "[ fib \(w.joined(separator: " ")) \(rs) => \(r) ]"
        case .reject(let t, let c): return "[ reject type \(t.rawValue) code \(c) ]"
        case .counter: return "[ counter pkts 0 bytes 0 ]"
        case .notrack: return "[ notrack ]"
        case .unknown(let n): return "[ \(n) (not modelled) ]"
        }
    }
}
