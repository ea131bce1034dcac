// Sets and maps.

public struct NftSetFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let constant = NftSetFlags(rawValue: 0x2)
    public static let interval = NftSetFlags(rawValue: 0x4)
    public static let timeout = NftSetFlags(rawValue: 0x10)
    /// `dynamic` (NFT_SET_EVAL): the set may be updated from the packet path.
    public static let dynamic = NftSetFlags(rawValue: 0x20)

    /// `interval,timeout`, as nft writes them after `flags`.
    public var text: String { words.joined(separator: ",") }

    var words: [String] {
        var w: [String] = []
        if contains(.constant) { w.append("constant") }
        if contains(.interval) { w.append("interval") }
        if contains(.dynamic) { w.append("dynamic") }
        if contains(.timeout) { w.append("timeout") }
        return w
    }
}

/// The key or data declaration of a set/map: `type a . b` or `typeof x . y`.
public enum NftTypeSpec: Sendable, Hashable {
    case types([NftDataType])
    case typeof([NftField])

    public static func type(_ t: NftDataType...) -> NftTypeSpec { .types(t) }

    public var fieldTypes: [NftDataType] {
        switch self {
        case .types(let t): return t
        case .typeof(let e): return e.map { $0.dataType }
        }
    }

    public var isConcat: Bool { fieldTypes.count > 1 }

    /// NFTA_SET_KEY_TYPE / DATA_TYPE value.
    public var typeId: UInt32 { NftDataType.concatTypeId(fieldTypes) }

    /// NFTA_SET_KEY_LEN / DATA_LEN value.
    public var byteLength: Int {
        let t = fieldTypes
        return t.count == 1 ? t[0].byteLength : t.reduce(0) { $0 + $1.paddedLength }
    }

    /// Byte order as nft records it in set userdata (concatenations: invalid).
    public var byteOrder: NftByteOrder {
        let t = fieldTypes
        return t.count == 1 ? t[0].byteOrder : .invalid
    }

    public var text: String {
        switch self {
        case .types(let t): return "type " + t.map { $0.nftName }.joined(separator: " . ")
        case .typeof(let e): return "typeof " + e.map { $0.text }.joined(separator: " . ")
        }
    }

    /// The part after `type`/`typeof` (used for map data after the colon).
    var bareText: String {
        switch self {
        case .types(let t): return t.map { $0.nftName }.joined(separator: " . ")
        case .typeof(let e): return e.map { $0.text }.joined(separator: " . ")
        }
    }
}

/// What a map maps to.
public enum NftMapData: Sendable, Hashable {
    case verdict
    case values(NftTypeSpec)

    public var fieldTypes: [NftDataType] {
        switch self {
        case .verdict: return [.verdict]
        case .values(let s): return s.fieldTypes
        }
    }
}

public struct NftSet: Sendable, Hashable {
    public var name: String
    public var key: NftTypeSpec
    /// nil: a set; otherwise a map (verdict or data).
    public var data: NftMapData?
    public var flags: NftSetFlags
    /// Default element timeout (`timeout 3h`), milliseconds.
    public var timeoutMs: UInt64?
    /// Maximum number of elements (`size N`).
    public var size: UInt32?
    public var comment: String?
    /// Elements; order has no meaning (render sorts them).
    public var elements: [NftElement]

    public init(name: String, key: NftTypeSpec, data: NftMapData? = nil, flags: NftSetFlags = [],
                timeoutMs: UInt64? = nil, size: UInt32? = nil, comment: String? = nil,
                elements: [NftElement] = []) {
        self.name = name
        self.key = key
        self.data = data
        self.flags = flags
        self.timeoutMs = timeoutMs
        self.size = size
        self.comment = comment
        self.elements = elements
    }

    /// A set: `NftSet.set("hairpin", .type(.ipv4Addr, .ipv4Addr))`.
    public static func set(_ name: String, _ key: NftTypeSpec, flags: NftSetFlags = [], timeoutMs: UInt64? = nil,
                           size: UInt32? = nil, comment: String? = nil, elements: [NftElement] = []) -> NftSet {
        NftSet(name: name, key: key, data: nil, flags: flags, timeoutMs: timeoutMs, size: size,
               comment: comment, elements: elements)
    }

    /// A verdict map: `NftSet.vmap("service-ips", .type(.ipv4Addr, .inetProto, .inetService))`.
    public static func vmap(_ name: String, _ key: NftTypeSpec, flags: NftSetFlags = [], comment: String? = nil,
                            elements: [NftElement] = []) -> NftSet {
        NftSet(name: name, key: key, data: .verdict, flags: flags, comment: comment, elements: elements)
    }

    /// A data map: `NftSet.map("eps", .typeof([.numgen(.random, modulus: 3)]), .typeof([.ipDaddr, .tcpDport]))`.
    public static func map(_ name: String, _ key: NftTypeSpec, _ data: NftTypeSpec, flags: NftSetFlags = [],
                           timeoutMs: UInt64? = nil, size: UInt32? = nil, comment: String? = nil,
                           elements: [NftElement] = []) -> NftSet {
        NftSet(name: name, key: key, data: .values(data), flags: flags, timeoutMs: timeoutMs, size: size,
               comment: comment, elements: elements)
    }

    public var isMap: Bool { data != nil }

    /// Kernel set flags (NFT_SET_*), as nft computes them.
    public var kernelFlags: UInt32 {
        var f = flags.rawValue
        if data != nil { f |= 0x8 }                              // NFT_SET_MAP
        if key.isConcat && flags.contains(.interval) { f |= 0x80 } // NFT_SET_CONCAT
        return f
    }

    /// Same definition (everything but elements).
    public func sameDefinition(as other: NftSet) -> Bool {
        name == other.name && key == other.key && data == other.data && flags == other.flags
            && timeoutMs == other.timeoutMs && size == other.size && comment == other.comment
    }

    /// Whether this set, as the kernel holds it, can stand for `wanted` although their `size`
    /// differs: both are sized, neither is dynamic, all else is equal, and it has room for
    /// every element of `wanted` without being more than 4× its size. A set whose element count
    /// moves back and forth across a power of two is then not recreated each time.
    public func canStand(for wanted: NftSet) -> Bool {
        guard let have = size, let want = wanted.size, have != want, !flags.contains(.dynamic) else { return false }
        var same = self
        same.size = want
        return same.sameDefinition(as: wanted) && UInt64(wanted.elements.count) < UInt64(have)
            && UInt64(have) <= 4 * UInt64(want)
    }

    /// Whether the set is a single-field interval set (kernel stores start/end elements).
    public var isSingleFieldInterval: Bool { flags.contains(.interval) && !key.isConcat }
}

/// The value side of a map element.
public enum NftElementData: Sendable, Hashable {
    case verdict(NftVerdict)
    case values([NftValue])
}

/// The key of an element: one value per key field; `keyEnd` (inclusive) for interval sets.
public struct NftElementKey: Sendable, Hashable, Comparable {
    public var start: [NftValue]
    public var end: [NftValue]?

    public init(start: [NftValue], end: [NftValue]? = nil) {
        self.start = start
        self.end = (end == start) ? nil : end
    }

    public static func < (a: NftElementKey, b: NftElementKey) -> Bool {
        let c = order(a.start, b.start)
        if c != 0 { return c < 0 }
        switch (a.end, b.end) {
        case (nil, nil): return false
        case (nil, _): return true
        case (_, nil): return false
        case (let x?, let y?): return order(x, y) < 0
        }
    }

    /// -1, 0 or 1: values compared by their bytes, one pass (sorting 100,000 elements runs this
    /// two million times).
    static func order(_ x: [NftValue], _ y: [NftValue]) -> Int {
        for i in 0..<min(x.count, y.count) {
            let p = x[i].bytes, q = y[i].bytes
            if p == q { continue }
            if case .integer(bytes: 4) = x[i].type, p.count == 4, q.count == 4 {
                // Host-endian (a numgen slot): numeric order, as nft lists them.
                return p.hostUInt32 < q.hostUInt32 ? -1 : 1
            }
            return NftBytes.order(p, q)
        }
        return x.count == y.count ? 0 : (x.count < y.count ? -1 : 1)
    }
}

public struct NftElement: Sendable, Hashable {
    public var key: NftElementKey
    public var data: NftElementData?
    public var timeoutMs: UInt64?
    public var comment: String?

    public init(key: [NftValue], keyEnd: [NftValue]? = nil, data: NftElementData? = nil,
                timeoutMs: UInt64? = nil, comment: String? = nil) {
        self.key = NftElementKey(start: key, end: keyEnd)
        self.data = data
        self.timeoutMs = timeoutMs
        self.comment = comment
    }

    /// Set element: `.element(.ipv4("10.0.0.1"), .ipv4("10.0.0.2"))`.
    public static func element(_ key: NftValue..., comment: String? = nil) -> NftElement {
        NftElement(key: key, comment: comment)
    }

    /// Verdict map element: `.verdict([.ipv4("172.30.0.41"), .proto(.tcp), .port(80)], .goto("svc-x"))`.
    public static func verdict(_ key: [NftValue], _ v: NftVerdict, comment: String? = nil) -> NftElement {
        NftElement(key: key, data: .verdict(v), comment: comment)
    }

    /// Data map element: `.mapping([.integer(0)], to: [.ipv4("10.0.0.1"), .port(8080)])`.
    public static func mapping(_ key: [NftValue], to data: [NftValue], comment: String? = nil) -> NftElement {
        NftElement(key: key, data: .values(data), comment: comment)
    }

    /// Interval element whose key fields are given as `NftKeyPart`s (values, prefixes, ranges):
    /// `.interval([.value(.ipv4("172.30.0.41")), .value(.proto(.tcp)), .value(.port(80)), .prefix("10.0.0.0/8")])`.
    public static func interval(_ parts: [NftKeyPart], data: NftElementData? = nil, comment: String? = nil) -> NftElement {
        NftElement(key: parts.map { $0.start }, keyEnd: parts.map { $0.end }, data: data, comment: comment)
    }
}

/// One field of an interval key.
public struct NftKeyPart: Sendable, Hashable {
    public var start: NftValue
    public var end: NftValue

    public static func value(_ v: NftValue) -> NftKeyPart { NftKeyPart(start: v, end: v) }

    public static func range(_ a: NftValue, _ b: NftValue) -> NftKeyPart { NftKeyPart(start: a, end: b) }

    /// CIDR prefix, `10.0.0.0/8` or `fd00::/64`. Traps on malformed text (use `parsePrefix`).
    public static func prefix(_ cidr: String) -> NftKeyPart {
        do { return try parsePrefix(cidr) } catch { preconditionFailure("\(error)") }
    }

    public static func parsePrefix(_ cidr: String) throws -> NftKeyPart {
        let parts = cidr.split(separator: "/")
        guard parts.count == 2, let len = Int(parts[1]) else { throw NftModelError.invalidPrefix(cidr) }
        let type: NftDataType = parts[0].contains(":") ? .ipv6Addr : .ipv4Addr
        guard let addr = try? NftValue.parse(String(parts[0]), as: type), len >= 0, len <= addr.bytes.count * 8 else {
            throw NftModelError.invalidPrefix(cidr)
        }
        let mask = NftBits.prefixMask(bytes: addr.bytes.count, len: len)
        let start = zip(addr.bytes, mask).map { $0 & $1 }
        let end = zip(addr.bytes, mask).map { ($0 & $1) | ~$1 }
        return NftKeyPart(start: NftValue(type: type, bytes: start), end: NftValue(type: type, bytes: end))
    }
}

/// Bit helpers for prefixes and masks.
public enum NftBits {
    public static func prefixMask(bytes: Int, len: Int) -> [UInt8] {
        (0..<bytes).map { i -> UInt8 in
            let bits = max(0, min(8, len - i * 8))
            return bits == 0 ? 0 : UInt8(truncatingIfNeeded: 0xff << (8 - bits))
        }
    }

    /// If `mask` is a contiguous prefix mask, its length.
    public static func prefixLength(ofMask mask: some Sequence<UInt8>) -> Int? {
        var len = 0
        var ended = false
        for b in mask {
            for bit in (0..<8).reversed() {
                let set = (b >> UInt8(bit)) & 1 == 1
                if set { if ended { return nil }; len += 1 } else { ended = true }
            }
        }
        return len
    }

    /// If [start, end] is exactly a CIDR block, its prefix length.
    public static func prefixLength(start: NftBytes, end: NftBytes) -> Int? {
        prefixLength(start: start.array, end: end.array)
    }

    public static func prefixLength(start: [UInt8], end: [UInt8]) -> Int? {
        guard start.count == end.count else { return nil }
        let diff = zip(start, end).map { $0 ^ $1 }
        // diff must be 0…0 1…1, and start must have 0s / end 1s there.
        let inv = diff.map { ~$0 }
        guard let len = prefixLength(ofMask: inv) else { return nil }
        let mask = prefixMask(bytes: start.count, len: len)
        for i in 0..<start.count where start[i] & ~mask[i] != 0 || end[i] | mask[i] != 0xff { return nil }
        return len
    }
}
