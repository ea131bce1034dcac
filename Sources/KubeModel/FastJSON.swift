#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Parallel

/// Builds KNode trees straight from JSON text (what `kubectl get -o json` prints), several times
/// faster than libyaml's event parser, which pays for YAML's generality on every byte. Values come
/// out exactly as the YAML path resolves them (numbers go through the same plain-scalar resolver).
/// Anything it does not accept (a syntax error, a duplicated key, trailing content, very deep
/// nesting) returns nil and the caller takes the YAML path, which reports errors with their line
/// and column.
enum FastJSON {
    /// `parts`: how many parts a large list near the top is parsed in, in parallel, when the
    /// input has at least `splitAbove` bytes.
    static func parse(_ bytes: UnsafeBufferPointer<UInt8>, parts: Int = Parallel.cores, splitAbove: Int = 1 << 20) -> KNode? {
        parse(bytes, parts: parts, splitAbove: splitAbove, items: nil)?.root
    }

    /// As `parse`, and when the root is an object whose `items` list is parsed in parts, each
    /// item is handed to `items` as soon as it is parsed, on the thread that parsed it, and only
    /// the results are kept: `root` then holds an empty `items` list and `items` the results in
    /// order. (A `List` of 10,000 objects is decoded while it is parsed, and the tree of each item
    /// is freed where it was built.) `items` is nil in the result when the list was parsed whole.
    ///
    /// `slices`, with `items`: an EndpointSlice item of the common valid shape is read straight
    /// into its value (see FastSlice.swift), named in `file`, and handed to `slices` instead of
    /// `items`.
    static func parse(_ bytes: UnsafeBufferPointer<UInt8>, parts: Int = Parallel.cores, splitAbove: Int = 1 << 20,
                      items: ((KNode) -> Any)?, slices: ((EndpointSlice) -> Any)? = nil, file: String = "") -> (root: KNode, items: [Any]?)? {
        var p = Parser(bytes: bytes)
        p.parts = bytes.count >= splitAbove ? parts : 1
        p.itemTransform = items
        p.sliceTransform = slices
        p.file = file
        p.skipSpace()
        guard let root = p.value(depth: 0) else { return nil }
        p.skipSpace()
        return p.pos == bytes.count ? (root, p.transformedItems) : nil
    }

    /// Where a list whose first item starts at `first` is cut into up to `parts` parts: `first`,
    /// then for each further share, the first later line that starts, at the first item's
    /// column with the same indentation, with the same byte as the first item and follows a comma.
    /// Only `first` when the first item does not start a line.
    static func cuts(_ bytes: UnsafeBufferPointer<UInt8>, first: Int, end: Int, parts: Int) -> [Int] {
        var lineStart = first
        while lineStart > 0 && bytes[lineStart - 1] != 0x0A { lineStart -= 1 }
        guard lineStart > 0, (lineStart..<first).allSatisfy({ bytes[$0] == 0x20 || bytes[$0] == 0x09 }) else { return [first] }
        let indent = first - lineStart
        var cuts = [first]
        for k in 1..<max(1, parts) {
            var i = max(cuts[cuts.count - 1] + 1, first + (end - first) * k / parts)
            var found: Int?
            while i < end, let nl = next(0x0A, in: bytes, from: i, to: end) {
                let item = nl + 1 + indent
                if item < end && bytes[item] == bytes[first] && (nl + 1..<item).allSatisfy({ bytes[$0] == bytes[lineStart + $0 - nl - 1] }),
                   previousNonSpace(bytes, before: nl + 1) == UInt8(ascii: ",") {
                    found = item
                    break
                }
                i = nl + 1
            }
            guard let cut = found else { break }
            cuts.append(cut)
        }
        return cuts
    }

    static func next(_ b: UInt8, in bytes: UnsafeBufferPointer<UInt8>, from: Int, to: Int) -> Int? {
        guard from < to, let p = memchr(bytes.baseAddress! + from, Int32(b), to - from) else { return nil }
        return UnsafePointer<UInt8>(p.assumingMemoryBound(to: UInt8.self)) - bytes.baseAddress!
    }

    /// How many times `b` occurs in `from..<to`: eight bytes at a time (this runs over the whole
    /// input before a list is parsed in parts).
    static func count(_ b: UInt8, in bytes: UnsafeBufferPointer<UInt8>, from: Int, to: Int) -> Int {
        var n = 0, i = from
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        let pattern = ones &* UInt64(b)
        guard to > from, let base = bytes.baseAddress else { return 0 }
        let raw = UnsafeRawPointer(base)
        while i + 8 <= to {
            // A zero byte of x is a match. Adding 0x7f to a byte's low seven bits sets its bit 7
            // exactly when they are not all zero (never carrying into the next byte); or-ing x
            // adds its own bit 7: bit 7 stays clear only in zero bytes.
            let x = raw.loadUnaligned(fromByteOffset: i, as: UInt64.self) ^ pattern
            let nonzero = ((x & ~highs) &+ ~highs) | x
            n += (~nonzero & highs).nonzeroBitCount
            i += 8
        }
        while i < to { if bytes[i] == b { n += 1 }; i += 1 }
        return n
    }

    static func previousNonSpace(_ bytes: UnsafeBufferPointer<UInt8>, before: Int) -> UInt8? {
        var i = before - 1
        while i >= 0 {
            let c = bytes[i]
            if c != 0x20 && c != 0x09 && c != 0x0A && c != 0x0D { return c }
            i -= 1
        }
        return nil
    }

    struct Parser {
        let bytes: UnsafeBufferPointer<UInt8>
        var pos = 0
        var line = 1
        /// The fields and items of the open objects and lists, innermost last: each collection
        /// is built in one allocation of its exact size when it closes (growing an array per
        /// object reallocated it several times).
        var fields: [KMap.Field] = []
        var items: [KNode] = []

        /// Where this parser's input ends (a part of a list parsed on its own ends early).
        var end: Int
        /// How many parts a list near the top (a `List`'s items) is cut into, parsed in parallel.
        var parts = 1
        /// Applied to each item of the root object's `items` list when it is parsed in parts.
        var itemTransform: ((KNode) -> Any)?
        var sliceTransform: ((EndpointSlice) -> Any)?
        var file = ""
        var transformedItems: [Any]?

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes; end = bytes.count }

        mutating func skipSpace() {
            while pos < end {
                switch bytes[pos] {
                case 0x20, 0x09, 0x0D: pos += 1
                case 0x0A: pos += 1; line += 1
                default: return
                }
            }
        }

        mutating func value(depth: Int) -> KNode? {
            guard pos < end, depth <= 200 else { return nil }
            let start = line
            switch bytes[pos] {
            case UInt8(ascii: "{"):
                pos += 1
                skipSpace()
                if pos < end && bytes[pos] == UInt8(ascii: "}") { pos += 1; return KNode(.map(KMap()), line: start) }
                let base = fields.count
                while true {
                    skipSpace()
                    guard pos < end, bytes[pos] == UInt8(ascii: "\""), let key = string() else { return nil }
                    skipSpace()
                    guard pos < end, bytes[pos] == UInt8(ascii: ":") else { return nil }
                    pos += 1
                    skipSpace()
                    if depth == 0, key == "items", let transform = itemTransform {
                        if let list = transformedList(transform) {
                            transformedItems = list.items
                            fields.append(KMap.Field(key: key, value: KNode(.list([]), line: list.line)))
                        } else {
                            // Not cut into parts (or a cut was wrong): parsed whole, without trying the cuts again.
                            let saved = parts
                            parts = 1
                            let v = value(depth: depth + 1)
                            parts = saved
                            guard let v else { return nil }
                            fields.append(KMap.Field(key: key, value: v))
                        }
                    } else {
                        guard let v = value(depth: depth + 1) else { return nil }
                        fields.append(KMap.Field(key: key, value: v))
                    }
                    skipSpace()
                    guard pos < end else { return nil }
                    if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                    if bytes[pos] == UInt8(ascii: "}") {
                        pos += 1
                        // A duplicated key: nil, and the YAML path reports it.
                        guard let map = KMap(uniqueFields: fields[base...]) else { return nil }
                        fields.removeSubrange(base...)
                        return KNode(.map(map), line: start)
                    }
                    return nil
                }
            case UInt8(ascii: "["):
                pos += 1
                skipSpace()
                if pos < end && bytes[pos] == UInt8(ascii: "]") { pos += 1; return KNode(.list([]), line: start) }
                if parts > 1 && depth <= 1, let list = parallelList(depth: depth, { $0 }) { return KNode(.list(list), line: start) }
                let base = items.count
                while true {
                    skipSpace()
                    guard let v = value(depth: depth + 1) else { return nil }
                    items.append(v)
                    skipSpace()
                    guard pos < end else { return nil }
                    if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                    if bytes[pos] == UInt8(ascii: "]") {
                        pos += 1
                        let list = Array(items[base...])
                        items.removeSubrange(base...)
                        return KNode(.list(list), line: start)
                    }
                    return nil
                }
            case UInt8(ascii: "\""):
                guard let s = string() else { return nil }
                return KNode(.string(s), line: start)
            default:
                // true, false, null or a number: the token up to the next delimiter, resolved as a
                // plain YAML scalar so both paths agree on every value.
                let begin = pos
                pos = tokenEnd(from: pos)
                if let v = FastJSON.simpleScalar(UnsafeBufferPointer(rebasing: bytes[begin..<pos])) { return KNode(v, line: start) }
                let token = String(decoding: UnsafeBufferPointer(rebasing: bytes[begin..<pos]), as: UTF8.self)
                guard FastJSON.isJSONLiteral(token) else { return nil }
                return KNode(YamlConversion.resolvePlain(token), line: start)
            }
        }

        /// Where a bare token (true, false, null or a number) that starts at `from` ends: at the
        /// next delimiter or white space.
        func tokenEnd(from: Int) -> Int {
            var i = from
            while i < end {
                let c = bytes[i]
                if c == UInt8(ascii: ",") || c == UInt8(ascii: "}") || c == UInt8(ascii: "]")
                    || c == 0x20 || c == 0x0A || c == 0x09 || c == 0x0D { break }
                i += 1
            }
            return i
        }

        /// The root's `items` list at `pos`, parsed in parts with `transform` applied to each
        /// item; nil (and `pos` unchanged) when it is not a list cut into parts.
        mutating func transformedList(_ transform: (KNode) -> Any) -> (items: [Any], line: Int)? {
            guard parts > 1, pos < end, bytes[pos] == UInt8(ascii: "[") else { return nil }
            let (savedPos, savedLine) = (pos, line)
            pos += 1
            skipSpace()
            let file = self.file
            let direct = sliceTransform.map { wrap in { (p: inout Parser) -> Any? in p.endpointSlice(depth: 2, file: file).map(wrap) } }
            if pos < end && bytes[pos] != UInt8(ascii: "]"), let list = parallelList(depth: 1, transform, direct: direct) { return (list, savedLine) }
            (pos, line) = (savedPos, savedLine)
            return nil
        }

        /// The items of a large list, each through `transform`, parsed in parts on every core;
        /// `pos` is at its first item. The list is cut before items that start a line at the same
        /// column as the first one (how kubectl and every JSON pretty-printer lay out a list of
        /// objects). A cut is only
        /// a guess, so it is checked: each part but the last must parse as whole items, each
        /// followed by a comma, ending exactly at the next cut. Since a part starts where an
        /// item really starts, parsing it reads its bytes as the whole parse would. nil (and
        /// `pos` unchanged) when the list is small, not laid out that way, or a cut is wrong:
        /// then the caller parses the list in one piece.
        mutating func parallelList<T>(depth: Int, _ transform: (KNode) -> T, direct: ((inout Parser) -> T?)? = nil) -> [T]? {
            let first = pos
            let cuts = FastJSON.cuts(bytes, first: first, end: end, parts: parts)
            guard cuts.count > 1 else { return nil }
            // The line each part starts on.
            var lines = [line]
            for k in 1..<cuts.count {
                lines.append(lines[k - 1] + FastJSON.count(0x0A, in: bytes, from: cuts[k - 1], to: cuts[k]))
            }
            let buffer = self.bytes, fullEnd = self.end
            let results = Parallel.map(count: cuts.count) { (k: Int) -> (items: [T], pos: Int, line: Int)? in
                var p = Parser(bytes: buffer)
                p.pos = cuts[k]
                p.line = lines[k]
                p.end = k + 1 < cuts.count ? cuts[k + 1] : fullEnd
                var out = [T]()
                while true {
                    p.skipSpace()
                    if let direct, let d = direct(&p) {
                        out.append(d)
                    } else {
                        guard let v = p.value(depth: depth + 1) else { return nil }
                        out.append(transform(v))
                    }
                    p.skipSpace()
                    guard p.pos < p.end else { return nil }
                    if p.bytes[p.pos] == UInt8(ascii: ",") {
                        p.pos += 1
                        p.skipSpace()
                        if k + 1 < cuts.count && p.pos == p.end { return (out, p.pos, p.line) }
                        continue
                    }
                    // Only the last part ends the list.
                    if p.bytes[p.pos] == UInt8(ascii: "]") && k + 1 == cuts.count { p.pos += 1; return (out, p.pos, p.line) }
                    return nil
                }
            }
            var list = [T]()
            list.reserveCapacity(results.reduce(0) { $0 + ($1?.items.count ?? 0) })
            for r in results {
                guard let r else { return nil }
                list.append(contentsOf: r.items)
            }
            pos = results[results.count - 1]!.pos
            line = results[results.count - 1]!.line
            return list
        }

        /// A JSON string starting at the opening quote; nil when malformed.
        mutating func string() -> String? {
            pos += 1
            let begin = pos
            while pos < end {
                let c = bytes[pos]
                if c == UInt8(ascii: "\"") {
                    let s = String(decoding: UnsafeBufferPointer(rebasing: bytes[begin..<pos]), as: UTF8.self)
                    pos += 1
                    return s
                }
                if c == UInt8(ascii: "\\") { return escapedString(begin) }
                if c < 0x20 { return nil }
                pos += 1
            }
            return nil
        }

        /// The slow path for strings with escapes.
        mutating func escapedString(_ begin: Int) -> String? {
            var out = [UInt8](UnsafeBufferPointer(rebasing: bytes[begin..<pos]))
            while pos < end {
                let c = bytes[pos]
                if c == UInt8(ascii: "\"") { pos += 1; return String(decoding: out, as: UTF8.self) }
                if c < 0x20 { return nil }
                if c != UInt8(ascii: "\\") { out.append(c); pos += 1; continue }
                pos += 1
                guard pos < end else { return nil }
                let e = bytes[pos]
                pos += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    guard var scalar = hex4() else { return nil }
                    if (0xD800..<0xDC00).contains(scalar) {
                        // A surrogate pair: \uD83D\uDE00.
                        guard pos + 1 < end, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") else { return nil }
                        pos += 2
                        guard let low = hex4(), (0xDC00..<0xE000).contains(low) else { return nil }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let u = Unicode.Scalar(scalar) else { return nil }
                    out.append(contentsOf: Array(String(Character(u)).utf8))
                default: return nil
                }
            }
            return nil
        }

        mutating func hex4() -> UInt32? {
            guard pos + 4 <= end else { return nil }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[pos]
                let d: UInt8
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
                default: return nil
                }
                v = v << 4 | UInt32(d)
                pos += 1
            }
            return v
        }
    }

    /// The common scalars without making a String: `true`, `false`, `null` and integers of up
    /// to 18 digits (no leading zero), resolved as `YamlConversion.resolvePlain` resolves them;
    /// nil for anything else.
    static func simpleScalar(_ t: UnsafeBufferPointer<UInt8>) -> KNode.Value? {
        func equals(_ s: StaticString) -> Bool {
            t.count == s.utf8CodeUnitCount && memcmp(t.baseAddress!, s.utf8Start, t.count) == 0
        }
        if t.isEmpty { return nil }
        if equals("true") { return .bool(true) }
        if equals("false") { return .bool(false) }
        if equals("null") { return .null }
        let negative = t.first == UInt8(ascii: "-")
        let digits = negative ? UnsafeBufferPointer(rebasing: t[1...]) : t
        guard !digits.isEmpty, digits.count <= 18, !(digits.count > 1 && digits[0] == UInt8(ascii: "0")) else { return nil }
        var v = 0
        for c in digits {
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
            v = v * 10 + Int(c - UInt8(ascii: "0"))
        }
        return .int(negative ? -v : v)
    }

    /// true, false, null, or a number as JSON writes it (RFC 8259 §6).
    static func isJSONLiteral(_ t: String) -> Bool {
        if t == "true" || t == "false" || t == "null" { return true }
        var u = Substring(t).utf8[...]
        if u.first == UInt8(ascii: "-") { u = u.dropFirst() }
        func digits(_ u: inout Substring.UTF8View.SubSequence) -> Int {
            var n = 0
            while let c = u.first, c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") { u = u.dropFirst(); n += 1 }
            return n
        }
        let intStart = u
        let n = digits(&u)
        guard n > 0, !(n > 1 && intStart.first == UInt8(ascii: "0")) else { return false }
        if u.first == UInt8(ascii: ".") { u = u.dropFirst(); guard digits(&u) > 0 else { return false } }
        if u.first == UInt8(ascii: "e") || u.first == UInt8(ascii: "E") {
            u = u.dropFirst()
            if u.first == UInt8(ascii: "+") || u.first == UInt8(ascii: "-") { u = u.dropFirst() }
            guard digits(&u) > 0 else { return false }
        }
        return u.isEmpty
    }
}
