// Datatypes as nft knows them (type ids, lengths, byte order) and typed values.

/// nft byte order of a datatype, as stored in set userdata (BYTEORDER_* in nft).
public enum NftByteOrder: UInt32, Sendable, Hashable {
    case invalid = 0, host = 1, big = 2
}

/// A datatype of a set key / map data field or of a loaded packet field.
public enum NftDataType: Sendable, Hashable {
    case verdict
    case nfproto
    /// Host-endian integer of `bytes` bytes (e.g. a numgen result: 4).
    case integer(bytes: Int)
    case ipv4Addr
    case ipv6Addr
    case inetProto
    case inetService
    case mark
    case ctState
    case ctStatus
    case ctDirection
    case fibAddrType
    case ifname
    case etherAddr

    /// nft's datatype id (TYPE_* in nft), used in NFTA_SET_KEY_TYPE / DATA_TYPE.
    public var typeId: UInt32 {
        switch self {
        case .verdict: return 1
        case .nfproto: return 2
        case .integer: return 4
        case .etherAddr: return 9
        case .ipv4Addr: return 7
        case .ipv6Addr: return 8
        case .inetProto: return 12
        case .inetService: return 13
        case .mark: return 19
        case .ctState: return 26
        case .ctDirection: return 27
        case .ctStatus: return 28
        case .fibAddrType: return 38
        case .ifname: return 41
        }
    }

    /// Length in bytes of a value of this type.
    public var byteLength: Int {
        switch self {
        case .verdict: return 0
        case .nfproto, .inetProto, .ctDirection: return 1
        case .integer(let n): return n
        case .ipv4Addr, .mark, .ctState, .ctStatus, .fibAddrType: return 4
        case .ipv6Addr, .ifname: return 16
        case .inetService: return 2
        case .etherAddr: return 6
        }
    }

    /// Register-aligned length: each field of a concatenation occupies whole 32-bit words.
    public var paddedLength: Int { (byteLength + 3) / 4 * 4 }

    public var byteOrder: NftByteOrder {
        switch self {
        case .verdict: return .invalid
        case .ipv4Addr, .ipv6Addr, .inetService, .inetProto, .etherAddr: return .big
        case .nfproto, .integer, .mark, .ctState, .ctStatus, .ctDirection, .fibAddrType, .ifname: return .host
        }
    }

    /// The name used in `type …` declarations.
    public var nftName: String {
        switch self {
        case .verdict: return "verdict"
        case .nfproto: return "nf_proto"
        case .integer: return "integer"
        case .ipv4Addr: return "ipv4_addr"
        case .ipv6Addr: return "ipv6_addr"
        case .inetProto: return "inet_proto"
        case .inetService: return "inet_service"
        case .mark: return "mark"
        case .ctState: return "ct_state"
        case .ctStatus: return "ct_status"
        case .ctDirection: return "ct_dir"
        case .fibAddrType: return "fib_addrtype"
        case .ifname: return "ifname"
        case .etherAddr: return "ether_addr"
        }
    }

    /// Combined type id of a concatenation, as nft computes it (6 bits per field).
    public static func concatTypeId(_ types: [NftDataType]) -> UInt32 {
        if types.count == 1 { return types[0].typeId }
        var id: UInt32 = 0
        for t in types { id = (id << 6) | t.typeId }
        return id
    }

    /// The datatype for an nft type id (single, not a concatenation); lengths are needed
    /// to tell integers apart.
    public init?(typeId: UInt32, length: Int) {
        switch typeId {
        case 1: self = .verdict
        case 2: self = .nfproto
        case 4: self = .integer(bytes: length)
        case 7: self = .ipv4Addr
        case 8: self = .ipv6Addr
        case 9: self = .etherAddr
        case 12: self = .inetProto
        case 13: self = .inetService
        case 19: self = .mark
        case 26: self = .ctState
        case 27: self = .ctDirection
        case 28: self = .ctStatus
        case 38: self = .fibAddrType
        case 41: self = .ifname
        default: return nil
        }
    }
}

/// Well-known layer-4 protocols.
public enum NftL4Proto: Sendable, Hashable {
    case tcp, udp, sctp, icmp, icmpv6, other(UInt8)

    public var number: UInt8 {
        switch self {
        case .tcp: return 6
        case .udp: return 17
        case .sctp: return 132
        case .icmp: return 1
        case .icmpv6: return 58
        case .other(let n): return n
        }
    }

    public init(number: UInt8) {
        switch number {
        case 6: self = .tcp
        case 17: self = .udp
        case 132: self = .sctp
        case 1: self = .icmp
        case 58: self = .icmpv6
        default: self = .other(number)
        }
    }

    public var name: String {
        switch self {
        case .tcp: return "tcp"
        case .udp: return "udp"
        case .sctp: return "sctp"
        case .icmp: return "icmp"
        case .icmpv6: return "ipv6-icmp"
        case .other(let n): return String(n)
        }
    }
}

/// Connection-tracking state bits (NF_CT_STATE_*).
public struct NftCtState: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let invalid = NftCtState(rawValue: 1)
    public static let established = NftCtState(rawValue: 2)
    public static let related = NftCtState(rawValue: 4)
    public static let new = NftCtState(rawValue: 8)
    public static let untracked = NftCtState(rawValue: 64)

    static let names: [(UInt32, String)] = [(1, "invalid"), (2, "established"), (4, "related"), (8, "new"), (64, "untracked")]
}

/// Connection-tracking status bits (IPS_*).
public struct NftCtStatus: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let expected = NftCtStatus(rawValue: 1)
    public static let seenReply = NftCtStatus(rawValue: 2)
    public static let assured = NftCtStatus(rawValue: 4)
    public static let confirmed = NftCtStatus(rawValue: 8)
    public static let snat = NftCtStatus(rawValue: 16)
    public static let dnat = NftCtStatus(rawValue: 32)
    public static let dying = NftCtStatus(rawValue: 512)

    static let names: [(UInt32, String)] = [(1, "expected"), (2, "seen-reply"), (4, "assured"), (8, "confirmed"),
                                            (16, "snat"), (32, "dnat"), (512, "dying")]
}

/// Route address types (RTN_*) as returned by `fib … type`.
public enum NftFibAddrType: UInt32, Sendable, Hashable, CaseIterable {
    case unspec = 0, unicast, local, broadcast, anycast, multicast, blackhole, unreachable, prohibit, `throw`, nat, xresolve

    public var name: String {
        switch self {
        case .unspec: return "unspec"
        case .unicast: return "unicast"
        case .local: return "local"
        case .broadcast: return "broadcast"
        case .anycast: return "anycast"
        case .multicast: return "multicast"
        case .blackhole: return "blackhole"
        case .unreachable: return "unreachable"
        case .prohibit: return "prohibit"
        case .throw: return "throw"
        case .nat: return "nat"
        case .xresolve: return "xresolve"
        }
    }
}

/// A typed value: the datatype and the exact bytes nft puts into a register / set key.
/// Bytes are unpadded (`type.byteLength` long, except `integer`); concatenations pad each
/// field to 4 bytes.
public struct NftValue: Sendable, Hashable, Comparable {
    public var type: NftDataType
    public var bytes: NftBytes

    public init(type: NftDataType, bytes: NftBytes) {
        self.type = type
        self.bytes = bytes
    }

    public init(type: NftDataType, bytes: [UInt8]) {
        self.init(type: type, bytes: NftBytes(bytes))
    }

    public static func < (a: NftValue, b: NftValue) -> Bool {
        NftBytes.order(a.bytes, b.bytes) < 0
    }

    // MARK: constructors

    /// IPv4 address from dotted-quad text. Traps on malformed text: validate input first
    /// (or use `parse(_:as:)`).
    public static func ipv4(_ text: String) -> NftValue {
        guard let b = NftAddress.parseIPv4(text) else { preconditionFailure("invalid IPv4 address \(text)") }
        return NftValue(type: .ipv4Addr, bytes: b)
    }

    public static func ipv4(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) -> NftValue {
        NftValue(type: .ipv4Addr, bytes: [a, b, c, d])
    }

    /// IPv6 address from text (RFC 4291 forms incl. `::`). Traps on malformed text.
    public static func ipv6(_ text: String) -> NftValue {
        guard let b = NftAddress.parseIPv6(text) else { preconditionFailure("invalid IPv6 address \(text)") }
        return NftValue(type: .ipv6Addr, bytes: b)
    }

    /// IPv4 or IPv6 address, whichever the text is. Traps on malformed text.
    public static func ip(_ text: String) -> NftValue {
        text.contains(":") ? ipv6(text) : ipv4(text)
    }

    public static func proto(_ p: NftL4Proto) -> NftValue {
        NftValue(type: .inetProto, bytes: [p.number])
    }

    public static func port(_ p: UInt16) -> NftValue {
        NftValue(type: .inetService, bytes: NftBytes(network: p))
    }

    public static func mark(_ m: UInt32) -> NftValue {
        NftValue(type: .mark, bytes: NftBytes(host: m))
    }

    /// A host-endian 32-bit integer (e.g. a numgen result key).
    public static func integer(_ v: UInt32) -> NftValue {
        NftValue(type: .integer(bytes: 4), bytes: NftBytes(host: v))
    }

    public static func ifname(_ name: String) -> NftValue {
        var b = Array(name.utf8.prefix(15))
        b += [UInt8](repeating: 0, count: 16 - b.count)
        return NftValue(type: .ifname, bytes: b)
    }

    public static func nfproto(_ f: NftFamily) -> NftValue {
        NftValue(type: .nfproto, bytes: [f == .ip6 ? 10 : 2])
    }

    public static func ctState(_ s: NftCtState) -> NftValue { NftValue(type: .ctState, bytes: NftBytes(host: s.rawValue)) }
    public static func ctStatus(_ s: NftCtStatus) -> NftValue { NftValue(type: .ctStatus, bytes: NftBytes(host: s.rawValue)) }
    public static func fibAddrType(_ t: NftFibAddrType) -> NftValue { NftValue(type: .fibAddrType, bytes: NftBytes(host: t.rawValue)) }

    /// Parses nft text for a value of the given type (addresses, protocol names/numbers,
    /// ports, marks, integers, interface names).
    public static func parse(_ text: String, as type: NftDataType) throws -> NftValue {
        func bad() -> NftModelError { NftModelError.invalidValue(text: text, type: type.nftName) }
        switch type {
        case .ipv4Addr:
            guard let b = NftAddress.parseIPv4(text) else { throw bad() }
            return NftValue(type: type, bytes: b)
        case .ipv6Addr:
            guard let b = NftAddress.parseIPv6(text) else { throw bad() }
            return NftValue(type: type, bytes: b)
        case .inetProto:
            switch text {
            case "tcp": return .proto(.tcp)
            case "udp": return .proto(.udp)
            case "sctp": return .proto(.sctp)
            case "icmp": return .proto(.icmp)
            case "icmpv6", "ipv6-icmp": return .proto(.icmpv6)
            default:
                guard let n = UInt8(text) else { throw bad() }
                return .proto(NftL4Proto(number: n))
            }
        case .inetService:
            guard let p = UInt16(text) else { throw bad() }
            return .port(p)
        case .mark, .integer:
            let v: UInt32?
            if text.hasPrefix("0x") { v = UInt32(text.dropFirst(2), radix: 16) } else { v = UInt32(text) }
            guard let v else { throw bad() }
            return type == .mark ? .mark(v) : NftValue(type: type, bytes: hostBytes(v))
        case .ifname:
            return .ifname(text)
        default:
            throw bad()
        }
    }

    /// Host-endian (little-endian on every platform Swift/Linux runs on) bytes of a u32.
    public static func hostBytes(_ v: UInt32) -> [UInt8] {
        withUnsafeBytes(of: v) { Array($0) }
    }

    public static func hostUInt32(_ b: some Collection<UInt8>) -> UInt32 {
        var v: UInt32 = 0
        withUnsafeMutableBytes(of: &v) { dst in
            for (i, x) in b.prefix(4).enumerated() { dst[i] = x }
        }
        return v
    }

    /// The bytes padded to a whole number of 32-bit registers.
    public var paddedBytes: [UInt8] {
        let n = (bytes.count + 3) / 4 * 4
        return bytes.array + [UInt8](repeating: 0, count: n - bytes.count)
    }

    /// nft text for this value.
    public var text: String { NftFormat.value(bytes, type: type) }
}

public enum NftModelError: Error, Sendable, Hashable, CustomStringConvertible {
    case invalidValue(text: String, type: String)
    case invalidPrefix(String)
    case unrenderable(table: String, chain: String, rule: Int, reason: String)

    public var description: String {
        switch self {
        case .invalidValue(let t, let ty): return "invalid \(ty) value \"\(t)\""
        case .invalidPrefix(let p): return "invalid prefix \"\(p)\""
        case .unrenderable(let table, let chain, let rule, let reason):
            return "\(table) chain \(chain) rule #\(rule) cannot be written as nft text: \(reason)"
        }
    }
}

/// Address parsing and printing, without Foundation.
public enum NftAddress {
    public static func parseIPv4(_ s: some StringProtocol) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(4)
        for part in s.split(separator: ".", omittingEmptySubsequences: false) {
            guard !part.isEmpty, part.count <= 3, let v = UInt8(part) else { return nil }
            out.append(v)
        }
        return out.count == 4 ? out : nil
    }

    public static func parseIPv6(_ s: some StringProtocol) -> [UInt8]? {
        let u = Array(String(s).utf8)
        func groups(_ part: ArraySlice<UInt8>, allowV4: Bool) -> [UInt16]? {
            if part.isEmpty { return [] }
            var out: [UInt16] = []
            let items = part.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
            for (i, item) in items.enumerated() {
                let text = String(decoding: item, as: UTF8.self)
                if allowV4 && i == items.count - 1 && item.contains(UInt8(ascii: ".")) {
                    guard let b = parseIPv4(text) else { return nil }
                    out.append(UInt16(b[0]) << 8 | UInt16(b[1]))
                    out.append(UInt16(b[2]) << 8 | UInt16(b[3]))
                } else {
                    guard !item.isEmpty, item.count <= 4, let v = UInt16(text, radix: 16) else { return nil }
                    out.append(v)
                }
            }
            return out
        }
        var dc: Int? = nil
        var i = 0
        while i + 1 < u.count {
            if u[i] == UInt8(ascii: ":") && u[i + 1] == UInt8(ascii: ":") {
                if dc != nil { return nil }
                dc = i
                i += 2
            } else { i += 1 }
        }
        var all: [UInt16]
        if let dc {
            guard let h = groups(u[..<dc], allowV4: false), let t = groups(u[(dc + 2)...], allowV4: true),
                  h.count + t.count <= 7 else { return nil }
            all = h + [UInt16](repeating: 0, count: 8 - h.count - t.count) + t
        } else {
            guard let g = groups(u[...], allowV4: true), g.count == 8 else { return nil }
            all = g
        }
        var out: [UInt8] = []
        out.reserveCapacity(16)
        for g in all { out.append(UInt8(g >> 8)); out.append(UInt8(g & 0xff)) }
        return out
    }

    public static func formatIPv4(_ b: some Collection<UInt8>) -> String {
        var t = NftTextBytes()
        t.ipv4(Array(b.prefix(4)))
        return t.string
    }

    /// RFC 5952 text (longest run of ≥2 zero groups compressed), like inet_ntop.
    public static func formatIPv6(_ bytes: some Collection<UInt8>) -> String {
        var t = NftTextBytes()
        t.ipv6(Array(bytes.prefix(16)))
        return t.string
    }
}

/// Text formatting of typed bytes, shared by render and human-readable diff.
public enum NftFormat {
    public static func value(_ bytes: [UInt8], type: NftDataType) -> String { value(NftBytes(bytes), type: type) }

    public static func value(_ bytes: NftBytes, type: NftDataType) -> String {
        switch type {
        case .ipv4Addr: return NftAddress.formatIPv4(bytes)
        case .ipv6Addr: return NftAddress.formatIPv6(bytes)
        case .inetProto: return NftL4Proto(number: bytes.first ?? 0).name
        case .inetService:
            return String(UInt16(bytes.first ?? 0) << 8 | UInt16(bytes.count > 1 ? bytes[1] : 0))
        case .mark: return hex32(NftValue.hostUInt32(bytes))
        case .integer: return String(NftValue.hostUInt32(bytes))
        case .nfproto:
            switch bytes.first ?? 0 {
            case 2: return "ipv4"
            case 10: return "ipv6"
            default: return String(bytes.first ?? 0)
            }
        case .ctState: return bits(NftValue.hostUInt32(bytes), NftCtState.names)
        case .ctStatus: return bits(NftValue.hostUInt32(bytes), NftCtStatus.names)
        case .ctDirection: return (bytes.first ?? 0) == 0 ? "original" : "reply"
        case .fibAddrType:
            let v = NftValue.hostUInt32(bytes)
            return NftFibAddrType(rawValue: v)?.name ?? String(v)
        case .ifname:
            let trimmed = bytes.prefix { $0 != 0 }
            return quoted(String(decoding: trimmed, as: UTF8.self))
        case .etherAddr:
            return bytes.map { h2($0) }.joined(separator: ":")
        case .verdict:
            return "verdict"
        }
    }

    public static func hex32(_ v: UInt32) -> String {
        let s = String(v, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - s.count)) + s
    }

    static func h2(_ b: UInt8) -> String {
        let s = String(b, radix: 16)
        return s.count == 1 ? "0" + s : s
    }

    static func bits(_ v: UInt32, _ names: [(UInt32, String)]) -> String {
        var parts: [String] = []
        var rest = v
        for (bit, name) in names where v & bit != 0 {
            parts.append(name)
            rest &= ~bit
        }
        if rest != 0 || parts.isEmpty { parts.append(hex32(rest)) }
        return parts.joined(separator: ",")
    }

    /// Double-quoted nft string.
    public static func quoted(_ s: String) -> String {
        if !s.utf8.contains(UInt8(ascii: "\"")) { return "\"" + s + "\"" }
        // Escaped byte by byte, as NftTextBytes.quoted does (a `"` followed by a combining mark
        // is still a `"` byte).
        var out = NftTextBytes()
        out.quoted(s)
        return out.string
    }

    /// Durations as nft prints them: 3h, 1d2h, 10s, 250ms.
    public static func duration(ms: UInt64) -> String {
        if ms == 0 { return "0s" }
        var rest = ms
        var out = ""
        for (unit, n) in [("d", UInt64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] where rest >= n {
            out += "\(rest / n)\(unit)"
            rest %= n
        }
        if rest > 0 { out += "\(rest)ms" }
        return out
    }

    static func hexBytes(_ b: some Collection<UInt8>) -> String {
        b.isEmpty ? "" : "0x" + b.map { h2($0) }.joined()
    }
}
