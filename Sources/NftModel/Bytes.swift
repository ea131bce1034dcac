#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The bytes of a value or an expression's data. Up to 16 (every nft data type, one register)
/// are held inline, without an allocation: a full ruleset at 10,000 services holds about a
/// million of them, and an array each was a third of its allocations. Longer ones (a
/// concatenation compared at once) are held in an array.
public struct NftBytes: RandomAccessCollection, Hashable, Sendable, ExpressibleByArrayLiteral, CustomStringConvertible {
    private enum Storage: Hashable, Sendable {
        /// Little-endian words (byte `i` of `lo` is byte `i`), unused bytes zero, and the count.
        case inline(lo: UInt64, hi: UInt64, count: UInt8)
        case array([UInt8])
    }

    private var storage: Storage

    public static let inlineCapacity = 16

    public init() { storage = .inline(lo: 0, hi: 0, count: 0) }

    public init(arrayLiteral elements: UInt8...) { self.init(elements) }

    public init(_ bytes: [UInt8]) {
        self = bytes.withUnsafeBytes { NftBytes($0) }
    }

    public init(_ raw: UnsafeRawBufferPointer) {
        guard raw.count <= Self.inlineCapacity else { storage = .array(Array(raw)); return }
        var words: (UInt64, UInt64) = (0, 0)
        if raw.count > 0 { withUnsafeMutableBytes(of: &words) { $0.copyMemory(from: raw) } }
        storage = .inline(lo: UInt64(littleEndian: words.0), hi: UInt64(littleEndian: words.1), count: UInt8(raw.count))
    }

    public init(_ bytes: some Sequence<UInt8>) {
        var lo: UInt64 = 0, hi: UInt64 = 0, n = 0
        var spilled: [UInt8]?
        for b in bytes {
            if spilled != nil { spilled!.append(b); continue }
            if n < 8 { lo |= UInt64(b) << (8 * UInt64(n)) } else if n < 16 { hi |= UInt64(b) << (8 * UInt64(n - 8)) } else {
                spilled = Array(NftBytes(lo: lo, hi: hi, count: 16)) + [b]
                continue
            }
            n += 1
        }
        storage = spilled.map { .array($0) } ?? .inline(lo: lo, hi: hi, count: UInt8(n))
    }

    private init(lo: UInt64, hi: UInt64, count: Int) {
        storage = .inline(lo: lo, hi: hi, count: UInt8(count))
    }

    /// `count` zero bytes.
    public init(zeros count: Int) {
        self = count <= Self.inlineCapacity ? NftBytes(lo: 0, hi: 0, count: count) : NftBytes([UInt8](repeating: 0, count: count))
    }

    /// The host-endian (little-endian) bytes of a 32-bit integer.
    public init(host v: UInt32) { self.init(lo: UInt64(v), hi: 0, count: 4) }

    /// The network-order (big-endian) bytes of a 32-bit integer (an IPv4 address).
    public init(network v: UInt32) { self.init(lo: UInt64(v.byteSwapped), hi: 0, count: 4) }

    /// The network-order bytes of a 128-bit integer given as its high and low halves (an IPv6 address).
    public init(network hi: UInt64, _ lo: UInt64) { self.init(lo: hi.byteSwapped, hi: lo.byteSwapped, count: 16) }

    /// The network-order (big-endian) bytes of a 16-bit integer (a port).
    public init(network v: UInt16) { self.init(lo: UInt64(v >> 8) | UInt64(v & 0xff) << 8, hi: 0, count: 2) }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    public var count: Int {
        switch storage {
        case .inline(_, _, let n): return Int(n)
        case .array(let a): return a.count
        }
    }

    public var isEmpty: Bool { count == 0 }

    public subscript(i: Int) -> UInt8 {
        switch storage {
        case .inline(let lo, let hi, let n):
            precondition(i >= 0 && i < Int(n), "NftBytes index out of range")
            return UInt8(truncatingIfNeeded: i < 8 ? lo >> (8 * UInt64(i)) : hi >> (8 * UInt64(i - 8)))
        case .array(let a):
            return a[i]
        }
    }

    /// The bytes in contiguous memory, valid only inside `body`.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        switch storage {
        case .inline(let lo, let hi, let n):
            var words = (lo.littleEndian, hi.littleEndian)
            return try Swift.withUnsafeBytes(of: &words) { try body(UnsafeRawBufferPointer(rebasing: $0[0..<Int(n)])) }
        case .array(let a):
            return try a.withUnsafeBytes(body)
        }
    }

    public func withContiguousStorageIfAvailable<R>(_ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R? {
        try withUnsafeBytes { try body($0.bindMemory(to: UInt8.self)) }
    }

    /// Byte `i`, which must be below 8, of inline bytes (`nil` when held in an array).
    @inline(__always) func inlineByte(_ i: Int) -> UInt8? {
        if case .inline(let lo, _, _) = storage { return UInt8(truncatingIfNeeded: lo >> (8 * UInt64(i))) }
        return nil
    }

    public var array: [UInt8] {
        switch storage {
        case .inline: return Array(self)
        case .array(let a): return a
        }
    }

    /// The first four bytes (fewer: zero-filled) as a host-endian integer.
    public var hostUInt32: UInt32 {
        switch storage {
        case .inline(let lo, _, let n): return UInt32(truncatingIfNeeded: n >= 4 ? lo : lo & ((1 << (8 * UInt64(n))) - 1))
        case .array(let a): return NftValue.hostUInt32(a)
        }
    }

    /// -1, 0 or 1: byte-wise (lexicographic) order, shorter first on a common prefix.
    public static func order(_ a: NftBytes, _ b: NftBytes) -> Int {
        if case .inline(let al, let ah, let an) = a.storage, case .inline(let bl, let bh, let bn) = b.storage {
            // Byte-wise order of little-endian words is the numeric order of their byte swaps.
            if al != bl { return al.byteSwapped < bl.byteSwapped ? -1 : 1 }
            if ah != bh { return ah.byteSwapped < bh.byteSwapped ? -1 : 1 }
            return an == bn ? 0 : (an < bn ? -1 : 1)
        }
        return a.withUnsafeBytes { p in
            b.withUnsafeBytes { q in
                let n = Swift.min(p.count, q.count)
                let c = n == 0 ? 0 : memcmp(p.baseAddress!, q.baseAddress!, n)
                if c != 0 { return c < 0 ? -1 : 1 }
                return p.count == q.count ? 0 : (p.count < q.count ? -1 : 1)
            }
        }
    }

    public static func + (a: NftBytes, b: some Sequence<UInt8>) -> NftBytes { NftBytes(Array(a) + Array(b)) }

    public var description: String { array.description }
}
