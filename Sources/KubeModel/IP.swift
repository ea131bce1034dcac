#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An IP family, as Kubernetes names them (`IPv4`, `IPv6`).
public enum IPFamily: String, Sendable, Hashable, CaseIterable, Comparable {
    case ipv4 = "IPv4"
    case ipv6 = "IPv6"
    public static func < (a: IPFamily, b: IPFamily) -> Bool { a == .ipv4 && b == .ipv6 }
    public var bits: Int { self == .ipv4 ? 32 : 128 }
}

/// An IPv4 or IPv6 address held in two words (IPv4 uses the low 32 bits of `lo`).
public struct IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let family: IPFamily
    public let hi: UInt64
    public let lo: UInt64

    public init(v4 value: UInt32) { family = .ipv4; hi = 0; lo = UInt64(value) }
    public init(v6 hi: UInt64, _ lo: UInt64) { family = .ipv6; self.hi = hi; self.lo = lo }

    /// Parses a textual address strictly (no leading zeros in IPv4 octets, no zone).
    public init?(_ text: String) {
        var text = text
        let parsed: IPAddress? = text.withUTF8 { buf -> IPAddress? in
            // (inet_pton would stop at a NUL and take what is before it.)
            if buf.isEmpty || buf.count > 45 || buf.contains(0) { return nil }
            var isV6 = false
            for b in buf { if b == UInt8(ascii: ":") { isV6 = true; break } }
            if !isV6 { return IPAddress.parseIPv4(buf) }
            var tmp = [CChar](repeating: 0, count: buf.count + 1)
            for (i, b) in buf.enumerated() { tmp[i] = CChar(bitPattern: b) }
            if isV6 {
                var a = in6_addr()
                guard inet_pton(AF_INET6, tmp, &a) == 1 else { return nil }
                let bytes = withUnsafeBytes(of: &a) { Array($0) }
                var h: UInt64 = 0, l: UInt64 = 0
                for i in 0..<8 { h = (h << 8) | UInt64(bytes[i]) }
                for i in 8..<16 { l = (l << 8) | UInt64(bytes[i]) }
                return IPAddress(v6: h, l)
            }
            return nil
        }
        guard let p = parsed else { return nil }
        self = p
    }

    /// A dotted quad as glibc's inet_pton reads it: four decimal octets of at most 255, no
    /// leading zeros, nothing else.
    static func parseIPv4(_ buf: UnsafeBufferPointer<UInt8>) -> IPAddress? {
        var value: UInt32 = 0, octet: UInt32 = 0, digits = 0, dots = 0
        for c in buf {
            if c == UInt8(ascii: ".") {
                guard digits > 0, dots < 3 else { return nil }
                value = value << 8 | octet
                octet = 0; digits = 0; dots += 1
                continue
            }
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9"), !(digits == 1 && octet == 0) else { return nil }
            octet = octet * 10 + UInt32(c - UInt8(ascii: "0"))
            digits += 1
            guard octet <= 255 else { return nil }
        }
        guard digits > 0, dots == 3 else { return nil }
        return IPAddress(v4: value << 8 | octet)
    }

    public var v4: UInt32 { UInt32(truncatingIfNeeded: lo) }

    /// `body` of the dotted quad, with `:port` when given, written into a stack buffer (an IPv4
    /// address's text and an `IP:PORT` are made for every endpoint; interpolation cost 2 µs).
    public func withIPv4Text<R>(port: Int?, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        var buffer: (UInt64, UInt64, UInt64) = (0, 0, 0)
        return withUnsafeMutableBytes(of: &buffer) { raw -> R in
            var n = 0
            func put(_ c: UInt8) { raw[n] = c; n += 1 }
            func decimal(_ v: Int) {
                if v >= 10_000 { put(0x30 + UInt8(v / 10_000)) }
                if v >= 1_000 { put(0x30 + UInt8(v / 1_000 % 10)) }
                if v >= 100 { put(0x30 + UInt8(v / 100 % 10)) }
                if v >= 10 { put(0x30 + UInt8(v / 10 % 10)) }
                put(0x30 + UInt8(v % 10))
            }
            let v = v4
            for k in 0..<4 {
                if k > 0 { put(UInt8(ascii: ".")) }
                decimal(Int(v >> (24 - 8 * UInt32(k)) & 0xff))
            }
            if let port, (0...65535).contains(port) {
                put(UInt8(ascii: ":"))
                decimal(port)
            }
            return body(UnsafeBufferPointer(start: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), count: n))
        }
    }

    /// The 4 or 16 address bytes in network order.
    public var bytes: [UInt8] {
        if family == .ipv4 {
            let v = v4
            return [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
        }
        var out = [UInt8](); out.reserveCapacity(16)
        for i in (0..<8).reversed() { out.append(UInt8((hi >> (UInt64(i) * 8)) & 0xff)) }
        for i in (0..<8).reversed() { out.append(UInt8((lo >> (UInt64(i) * 8)) & 0xff)) }
        return out
    }

    public var isLoopback: Bool {
        family == .ipv4 ? (v4 >> 24) == 127 : (hi == 0 && lo == 1)
    }

    /// Canonical text: dotted quad, or RFC 5952 for IPv6 (what Go's net.IP.String() prints).
    public var description: String {
        if family == .ipv4 { return withIPv4Text(port: nil) { String(decoding: $0, as: UTF8.self) } }
        var groups = [UInt16](repeating: 0, count: 8)
        for i in 0..<4 { groups[i] = UInt16((hi >> (UInt64(3 - i) * 16)) & 0xffff) }
        for i in 0..<4 { groups[4 + i] = UInt16((lo >> (UInt64(3 - i) * 16)) & 0xffff) }
        // Longest run of zero groups (length >= 2), first one on ties.
        var bestStart = -1, bestLen = 0, i = 0
        while i < 8 {
            if groups[i] == 0 {
                var j = i
                while j < 8 && groups[j] == 0 { j += 1 }
                if j - i > bestLen { bestStart = i; bestLen = j - i }
                i = j
            } else { i += 1 }
        }
        if bestLen < 2 { bestStart = -1 }
        var s = ""
        i = 0
        while i < 8 {
            if i == bestStart {
                s += "::"
                i += bestLen
                continue
            }
            if !s.isEmpty && !s.hasSuffix(":") { s += ":" }
            s += String(groups[i], radix: 16)
            i += 1
        }
        return s
    }

    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        if a.family != b.family { return a.family < b.family }
        if a.hi != b.hi { return a.hi < b.hi }
        return a.lo < b.lo
    }
}

/// A CIDR prefix, always held masked (as Go's net.ParseCIDR returns the network).
public struct CIDR: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let prefixLength: Int

    public init?(_ text: String) {
        let t = text.trimmingSpaces()
        guard let slash = t.firstIndex(of: "/") else { return nil }
        guard let ip = IPAddress(String(t[t.startIndex..<slash])) else { return nil }
        let lenText = t[t.index(after: slash)...]
        guard !lenText.isEmpty, lenText.count <= 3, lenText.allSatisfy({ $0.isASCII && $0.isNumber }),
              let len = Int(lenText), len >= 0, len <= ip.family.bits else { return nil }
        self.init(network: ip, prefixLength: len)
    }

    public init(network ip: IPAddress, prefixLength len: Int) {
        prefixLength = len
        if ip.family == .ipv4 {
            let mask: UInt32 = len == 0 ? 0 : ~UInt32(0) << UInt32(32 - len)
            address = IPAddress(v4: ip.v4 & mask)
        } else {
            let (mh, ml) = CIDR.mask6(len)
            address = IPAddress(v6: ip.hi & mh, ip.lo & ml)
        }
    }

    static func mask6(_ len: Int) -> (UInt64, UInt64) {
        let mh: UInt64 = len == 0 ? 0 : (len >= 64 ? ~0 : ~UInt64(0) << UInt64(64 - len))
        let ml: UInt64 = len <= 64 ? 0 : (len >= 128 ? ~0 : ~UInt64(0) << UInt64(128 - len))
        return (mh, ml)
    }

    public var family: IPFamily { address.family }

    public func contains(_ ip: IPAddress) -> Bool {
        guard ip.family == family else { return false }
        return CIDR(network: ip, prefixLength: prefixLength).address == address
    }

    public var description: String { "\(address)/\(prefixLength)" }

    /// The last address in the prefix (for interval keys).
    public var lastAddress: IPAddress {
        if family == .ipv4 {
            let host: UInt32 = prefixLength == 32 ? 0 : (prefixLength == 0 ? ~0 : ~(~UInt32(0) << UInt32(32 - prefixLength)))
            return IPAddress(v4: address.v4 | host)
        }
        let (mh, ml) = CIDR.mask6(prefixLength)
        return IPAddress(v6: address.hi | ~mh, address.lo | ~ml)
    }
}

extension StringProtocol {
    /// Trims ASCII spaces, tabs and newlines at both ends.
    public func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\n" || f == "\r" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\n" || l == "\r" { s = s.dropLast() }
        return String(s)
    }
}
