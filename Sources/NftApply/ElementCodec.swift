import NftModel
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A compact, self-describing binary form of a set's elements, kept in the saved apply state
/// so that the next apply can diff a changed set without dumping it from the kernel (a set
/// dump is quadratic in the set's size). Per element: a flags byte, the key values, the end
/// values, the data, the timeout and the comment; per value: nft type id, length, bytes.
public enum NftElementCodec {
    private static let hasEnd: UInt8 = 1, verdictData: UInt8 = 2, valueData: UInt8 = 4,
                       hasTimeout: UInt8 = 8, hasComment: UInt8 = 16

    public static func encode(_ elements: [NftElement]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(elements.count * 24 + 8)
        putU32(&out, UInt32(elements.count))
        for e in elements {
            var flags: UInt8 = 0
            if e.key.end != nil { flags |= hasEnd }
            switch e.data {
            case .verdict?: flags |= verdictData
            case .values?: flags |= valueData
            case nil: break
            }
            if e.timeoutMs != nil { flags |= hasTimeout }
            if e.comment != nil { flags |= hasComment }
            out.append(flags)
            putValues(&out, e.key.start)
            if let end = e.key.end { putValues(&out, end) }
            switch e.data {
            case .verdict(let v)?:
                putU32(&out, UInt32(bitPattern: v.code))
                putString(&out, v.chain ?? "")
            case .values(let vs)?:
                putValues(&out, vs)
            case nil:
                break
            }
            if let t = e.timeoutMs { putU32(&out, UInt32(truncatingIfNeeded: t >> 32)); putU32(&out, UInt32(truncatingIfNeeded: t)) }
            if let c = e.comment { putString(&out, c) }
        }
        return out
    }

    /// The elements, or nil if the bytes are not a valid encoding.
    public static func decode(_ bytes: [UInt8]) -> [NftElement]? {
        guard let offsets = recordOffsets(bytes) else { return nil }
        return decode(bytes, records: offsets.dropLast())
    }

    /// Where each element's record starts, plus the end of the last one (count + 1 offsets),
    /// or nil if the bytes are not a valid encoding. Nothing is allocated per element.
    public static func recordOffsets(_ bytes: [UInt8]) -> [Int]? {
        bytes.withUnsafeBufferPointer { b -> [Int]? in
            var r = Reader(b: b)
            guard let n = r.u32(), Int(n) <= b.count else { return nil }
            var offsets = [Int]()
            offsets.reserveCapacity(Int(n) + 1)
            for _ in 0..<n {
                offsets.append(r.i)
                guard let flags = r.u8(), r.skipValues() else { return nil }
                if flags & hasEnd != 0 { guard r.skipValues() else { return nil } }
                if flags & verdictData != 0 { guard r.u32() != nil, r.string() != nil else { return nil } }
                else if flags & valueData != 0 { guard r.skipValues() else { return nil } }
                if flags & hasTimeout != 0 { guard r.u32() != nil, r.u32() != nil else { return nil } }
                if flags & hasComment != 0 { guard r.string() != nil else { return nil } }
            }
            offsets.append(r.i)
            return r.i == b.count ? offsets : nil
        }
    }

    /// Whether record `i` of `a` and record `j` of `b` are the same bytes (the same element).
    public static func sameRecord(_ a: [UInt8], _ ao: [Int], _ i: Int, _ b: [UInt8], _ bo: [Int], _ j: Int) -> Bool {
        let n = ao[i + 1] - ao[i]
        guard n == bo[j + 1] - bo[j] else { return false }
        return a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in
            memcmp(pa.baseAddress! + ao[i], pb.baseAddress! + bo[j], n) == 0
        } }
    }

    /// The elements whose records start at `records` (offsets from `recordOffsets`).
    public static func decode<C: Collection>(_ bytes: [UInt8], records: C) -> [NftElement]? where C.Element == Int {
        bytes.withUnsafeBufferPointer { b -> [NftElement]? in
            var r = Reader(b: b)
            var out = [NftElement]()
            out.reserveCapacity(records.count)
            for start in records {
                r.i = start
                guard let flags = r.u8(), let key = r.values() else { return nil }
                var end: [NftValue]?
                if flags & hasEnd != 0 { guard let e = r.values() else { return nil }; end = e }
                var data: NftElementData?
                if flags & verdictData != 0 {
                    guard let code = r.u32(), let chain = r.string(),
                          let v = NftVerdict(code: Int32(bitPattern: code), chain: chain.isEmpty ? nil : chain) else { return nil }
                    data = .verdict(v)
                } else if flags & valueData != 0 {
                    guard let vs = r.values() else { return nil }
                    data = .values(vs)
                }
                var timeout: UInt64?
                if flags & hasTimeout != 0 {
                    guard let hi = r.u32(), let lo = r.u32() else { return nil }
                    timeout = UInt64(hi) << 32 | UInt64(lo)
                }
                var comment: String?
                if flags & hasComment != 0 { guard let c = r.string() else { return nil }; comment = c }
                out.append(NftElement(key: key, keyEnd: end, data: data, timeoutMs: timeout, comment: comment))
            }
            return out
        }
    }

    private static func putU32(_ out: inout [UInt8], _ v: UInt32) {
        out.append(UInt8(truncatingIfNeeded: v >> 24)); out.append(UInt8(truncatingIfNeeded: v >> 16))
        out.append(UInt8(truncatingIfNeeded: v >> 8)); out.append(UInt8(truncatingIfNeeded: v))
    }

    private static func putString(_ out: inout [UInt8], _ s: String) {
        let n = min(s.utf8.count, 0xffff)
        out.append(UInt8(n >> 8)); out.append(UInt8(n & 0xff))
        out.append(contentsOf: s.utf8.prefix(n))
    }

    private static func putValues(_ out: inout [UInt8], _ vs: [NftValue]) {
        out.append(UInt8(vs.count))
        for v in vs {
            out.append(UInt8(truncatingIfNeeded: v.type.typeId))
            out.append(UInt8(v.bytes.count))
            out.append(contentsOf: v.bytes)
        }
    }

    private struct Reader {
        let b: UnsafeBufferPointer<UInt8>
        var i = 0

        mutating func u8() -> UInt8? {
            guard i < b.count else { return nil }
            defer { i += 1 }
            return b[i]
        }

        mutating func u32() -> UInt32? {
            guard i + 4 <= b.count else { return nil }
            defer { i += 4 }
            return UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
        }

        mutating func string() -> String? {
            guard i + 2 <= b.count else { return nil }
            let n = Int(b[i]) << 8 | Int(b[i + 1])
            guard i + 2 + n <= b.count else { return nil }
            defer { i += 2 + n }
            return String(decoding: UnsafeBufferPointer(rebasing: b[(i + 2)..<(i + 2 + n)]), as: UTF8.self)
        }

        mutating func skipValues() -> Bool {
            guard let n = u8() else { return false }
            for _ in 0..<n {
                guard u8() != nil, let len = u8(), i + Int(len) <= b.count else { return false }
                i += Int(len)
            }
            return true
        }

        mutating func values() -> [NftValue]? {
            guard let n = u8() else { return nil }
            var vs = [NftValue]()
            vs.reserveCapacity(Int(n))
            for _ in 0..<n {
                guard let id = u8(), let len = u8(), i + Int(len) <= b.count,
                      let type = NftDataType(typeId: UInt32(id), length: Int(len)) else { return nil }
                vs.append(NftValue(type: type, bytes: Array(b[i..<(i + Int(len))])))
                i += Int(len)
            }
            return vs
        }
    }
}
