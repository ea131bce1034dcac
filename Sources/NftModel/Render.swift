import Parallel

// Text: an `nft -f` script for a ruleset, and the decompiler that turns a rule's expressions
// back into nft syntax (so the text is derived from exactly the values sent over netlink).

public enum NftText {
    /// A chain/set/table name as nft accepts it: bare when it is an identifier, quoted otherwise.
    public static func name(_ s: String) -> String {
        var s = s
        return s.withUTF8 { isIdentifier($0) } ? s : NftFormat.quoted(s)
    }

    /// An ASCII letter or _ first, then letters, digits, / - _ . (a bare name in nft syntax).
    static func isIdentifier(_ u: UnsafeBufferPointer<UInt8>) -> Bool {
        guard !u.isEmpty else { return false }
        for (i, c) in u.enumerated() {
            let letter = (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c == 95
            if !(i == 0 ? letter : (letter || (c >= 48 && c <= 57) || c == 47 || c == 45 || c == 46)) { return false }
        }
        return true
    }
}

extension NftRuleset {
    /// The `nft -f` script that creates this ruleset in an empty namespace. Order: each table
    /// (by family, name) with its sets/maps (by name) and chains (by name), then elements,
    /// then rules (in chain order). Rules that cannot be written as nft text are emitted as
    /// `# kuberules: …` comment lines (see `renderChecked()`).
    public func render() -> String {
        String(decoding: renderBytes(), as: UTF8.self)
    }

    /// `render()` as UTF-8 bytes, for writing out without a String copy of a large script.
    public func renderBytes() -> [UInt8] {
        (try? renderInternal(strict: false).bytes) ?? []
    }

    /// Like `render()`, but throws if a rule cannot be expressed as nft text.
    public func renderChecked() throws -> String {
        try renderInternal(strict: true).string
    }

    /// A script that replaces the tables atomically: each table is created if missing, then
    /// deleted, then recreated (`destroy` needs kernel 6.3+; add+delete works everywhere).
    public func renderReplacing() -> String {
        var out = ""
        for t in sortedTables {
            out += "table \(t.family.rawValue) \(NftText.name(t.name))\n"
            out += "delete table \(t.family.rawValue) \(NftText.name(t.name))\n"
        }
        return out + render()
    }

    private func renderInternal(strict: Bool) throws -> NftTextBytes {
        var parts = [NftTextBytes]()
        for t in sortedTables {
            try t.render(into: &parts, strict: strict)
        }
        return NftTextBytes(joining: parts)
    }
}

/// Text as UTF-8 bytes. Rendering appends many small pieces per rule; appending them to one
/// byte array avoids building a String per piece (that was most of the time of `render`).
public struct NftTextBytes {
    public var bytes: [UInt8] = []

    public init() {}

    /// The parts one after the other, copied on every core into one allocation.
    public init(joining parts: [NftTextBytes]) {
        bytes = Parallel.join(parts.map(\.bytes))
    }

    public var string: String { String(decoding: bytes, as: UTF8.self) }
    public var count: Int { bytes.count }

    @inline(__always) public mutating func put(_ s: StaticString) {
        s.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }
    /// (Through `withUTF8`: appending a String's UTF8View element by element cost several times more.)
    @inline(__always) public mutating func put(_ s: String) {
        var s = s
        s.withUTF8 { bytes.append(contentsOf: $0) }
    }
    @inline(__always) public mutating func byte(_ b: UInt8) { bytes.append(b) }
    public mutating func put(_ other: NftTextBytes) { bytes.append(contentsOf: other.bytes) }

    public mutating func decimal<T: BinaryInteger>(_ v: T) {
        var n = UInt64(v)
        if n < 10 { bytes.append(0x30 + UInt8(n)); return }
        if n < 100 { bytes.append(0x30 + UInt8(n / 10)); bytes.append(0x30 + UInt8(n % 10)); return }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var k = 0
        withUnsafeMutableBytes(of: &digits) { d in
            while n > 0 { d[k] = 0x30 + UInt8(n % 10); n /= 10; k += 1 }
            while k > 0 { k -= 1; bytes.append(d[k]) }
        }
    }

    /// Dotted quad of the four bytes from `start` (fewer when `b` is shorter).
    public mutating func ipv4<C: RandomAccessCollection<UInt8>>(_ b: C, from start: Int = 0) where C.Index == Int {
        for i in start..<min(start + 4, b.count) {
            if i > start { bytes.append(UInt8(ascii: ".")) }
            octet(b[i])
        }
    }

    @inline(__always) mutating func octet(_ v: UInt8) {
        if v >= 100 { bytes.append(0x30 + v / 100) }
        if v >= 10 { bytes.append(0x30 + v / 10 % 10) }
        bytes.append(0x30 + v % 10)
    }

    /// RFC 5952 text (the longest run of two or more zero groups compressed, the first of equal
    /// runs), like inet_ntop; IPv4-mapped addresses as ::ffff:a.b.c.d.
    public mutating func ipv6<C: RandomAccessCollection<UInt8>>(_ b: C) where C.Index == Int {
        guard b.count >= 16 else { put(NftFormat.hexBytes(Array(b))); return }
        func group(_ i: Int) -> UInt16 { UInt16(b[2 * i]) << 8 | UInt16(b[2 * i + 1]) }
        if (0..<5).allSatisfy({ group($0) == 0 }) && group(5) == 0xffff {
            put("::ffff:")
            ipv4(b, from: 12)
            return
        }
        var bestStart = -1, bestLen = 0, i = 0
        while i < 8 {
            if group(i) == 0 {
                var j = i
                while j < 8 && group(j) == 0 { j += 1 }
                if j - i > bestLen && j - i >= 2 { bestStart = i; bestLen = j - i }
                i = j
            } else { i += 1 }
        }
        func hex(_ v: UInt16) {
            var shift: UInt16 = 12
            while shift > 0 && (v >> shift) == 0 { shift -= 4 }
            while true {
                let d = UInt8((v >> shift) & 0xf)
                bytes.append(d < 10 ? 0x30 + d : 0x57 + d)
                if shift == 0 { break }
                shift -= 4
            }
        }
        func groups(_ r: Range<Int>) {
            for k in r {
                if k > r.lowerBound { bytes.append(UInt8(ascii: ":")) }
                hex(group(k))
            }
        }
        if bestStart < 0 { groups(0..<8); return }
        groups(0..<bestStart)
        put("::")
        groups((bestStart + bestLen)..<8)
    }

    /// A double-quoted nft string.
    public mutating func quoted(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        for c in s.utf8 {
            if c == UInt8(ascii: "\"") { bytes.append(UInt8(ascii: "\\")) }
            bytes.append(c)
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// A value of `type`, as `NftFormat.value` writes it (the common types without a String).
    public mutating func value(_ b: NftBytes, type: NftDataType) {
        switch type {
        case .ipv4Addr:
            guard b.count == 4, let b0 = b.inlineByte(0), let b1 = b.inlineByte(1), let b2 = b.inlineByte(2), let b3 = b.inlineByte(3) else { ipv4(b); return }
            octet(b0); byte(UInt8(ascii: ".")); octet(b1); byte(UInt8(ascii: ".")); octet(b2); byte(UInt8(ascii: ".")); octet(b3)
        case .ipv6Addr: ipv6(b)
        case .inetService: decimal(UInt16(b.first ?? 0) << 8 | UInt16(b.count > 1 ? b[1] : 0))
        case .inetProto: put(NftL4Proto(number: b.first ?? 0).name)
        case .integer: decimal(b.hostUInt32)
        default: put(NftFormat.value(b, type: type))
        }
    }
}

extension NftTable {
    /// Appends the table's text to `parts` in pieces (joined once, by the caller).
    func render(into parts: inout [NftTextBytes], strict: Bool) throws {
        var out = NftTextBytes()
        let fam = family.rawValue
        let tname = NftText.name(name)
        out.put("table \(fam) \(tname) {\n")
        if let comment { out.put("\tcomment \(NftFormat.quoted(comment))\n") }
        let sets = sortedSets
        // Chains in name order, through (name, index) pairs: sorting a copy of 35,000 chains
        // retained each one.
        var named = chains.indices.map { (name: chains[$0].name, index: $0) }
        named.sort { $0.name < $1.name }
        let chainOrder = named.map(\.index)
        for s in sets {
            var h = "\t\(s.isMap ? "map" : "set") \(NftText.name(s.name)) {\n"
            h += "\t\t\(s.key.text)"
            if let d = s.data {
                switch d {
                case .verdict: h += " : verdict"
                case .values(let spec): h += " : " + spec.bareText
                }
            }
            h += "\n"
            let words = s.flags.words
            if !words.isEmpty { h += "\t\tflags \(words.joined(separator: ","))\n" }
            if let t = s.timeoutMs { h += "\t\ttimeout \(NftFormat.duration(ms: t))\n" }
            if let size = s.size { h += "\t\tsize \(size)\n" }
            if let c = s.comment { h += "\t\tcomment \(NftFormat.quoted(c))\n" }
            h += "\t}\n"
            out.put(h)
        }
        // Chain declarations in runs written on every core, joined in order.
        let declarations = Parallel.mapRuns(count: chainOrder.count, minimumCount: 4096) { (range: Range<Int>) -> NftTextBytes in
            var text = NftTextBytes()
            for k in chainOrder[range] {
                let c = chains[k]
                text.put("\tchain ")
                text.put(NftText.name(c.name))
                text.put(" {\n")
                if let b = c.base {
                    text.put("\t\ttype \(b.type.rawValue) hook \(b.hook.rawValue) priority \(b.priority); policy \(b.policy.rawValue);\n")
                }
                if let cm = c.comment { text.put("\t\tcomment "); text.quoted(cm); text.put("\n") }
                text.put("\t}\n")
            }
            return text
        }
        parts.append(out)
        parts += declarations
        out = NftTextBytes()
        out.put("}\n")
        // Elements in chunks of 1,000 per command (bounding lines and nft's per-command work),
        // written on every core and joined in order.
        let elementSets = sets.filter { !$0.elements.isEmpty }
        var chunks: [(set: Int, range: Range<Int>)] = []
        for (k, s) in elementSets.enumerated() {
            for lo in stride(from: 0, to: s.elements.count, by: 1000) {
                chunks.append((k, lo..<min(lo + 1000, s.elements.count)))
            }
        }
        // The backend adds them in order already; sorted only when they are not (checked chunk
        // by chunk on every core: a quarter of a million keys, 100,000 of them in one set).
        let unsorted = Set(Parallel.mapRuns(count: chunks.count, minimumCount: 16) { (run: Range<Int>) -> [Int] in
            run.compactMap { k -> Int? in
                let (i, range) = chunks[k]
                let elements = elementSets[i].elements
                for j in range where j > 0 && !(elements[j - 1].key < elements[j].key) { return i }
                return nil
            }
        }.flatMap { $0 })
        let sortedElements = Parallel.map(count: elementSets.count) { (k: Int) -> [NftElement] in
            unsorted.contains(k) ? elementSets[k].elements.sorted { $0.key < $1.key } : elementSets[k].elements
        }
        // Chunks of one large set cost alike, chunks of different sets do not: runs are handed
        // to whichever core is free.
        let elementTexts = Parallel.mapRuns(count: chunks.count, minimumCount: 16) { (run: Range<Int>) -> [NftTextBytes] in
            run.map { (k: Int) -> NftTextBytes in
                let (i, range) = chunks[k]
                let s = elementSets[i], sorted = sortedElements[i]
                let keyTypes = s.key.fieldTypes, dataTypes = s.data?.fieldTypes ?? []
                var text = NftTextBytes()
                text.put("add element \(fam) \(tname) \(NftText.name(s.name)) {\n")
                for j in range {
                    text.byte(UInt8(ascii: "\t"))
                    sorted[j].write(keyTypes: keyTypes, dataTypes: dataTypes, into: &text)
                    text.put(j + 1 < range.upperBound ? ",\n" : "\n")
                }
                text.put("}\n")
                return text
            }
        }.flatMap { $0 }
        parts.append(out)
        parts += elementTexts
        out = NftTextBytes()
        let setsByName = Dictionary(sets.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let withRules = chainOrder.filter { !chains[$0].rules.isEmpty }
        if !withRules.isEmpty {
            out.put("table \(fam) \(tname) {\n")
            // Chains print independently: in runs on every core, joined in order.
            let texts = Parallel.mapRuns(count: withRules.count, minimumCount: 256) { (range: Range<Int>) -> Result<NftTextBytes, NftModelError> in
                var d = Decompiler(family: family, sets: setsByName)
                for k in withRules[range] {
                    let c = chains[k]
                    d.out.put("\tchain ")
                    d.out.put(NftText.name(c.name))
                    d.out.put(" {\n")
                    for (i, r) in c.rules.enumerated() {
                        let lineStart = d.out.count
                        d.out.put("\t\t")
                        do {
                            try r.write(using: &d)
                            d.out.byte(UInt8(ascii: "\n"))
                        } catch {
                            let reason = (error as? NftDecompileError)?.reason ?? "\(error)"
                            let err = NftModelError.unrenderable(table: "\(fam) \(name)", chain: c.name, rule: i, reason: reason)
                            if strict { return .failure(err) }
                            d.out.bytes.removeSubrange(lineStart...)
                            d.out.put("\t\t# kuberules: \(err.description)\n")
                        }
                    }
                    d.out.put("\t}\n")
                }
                return .success(d.out)
            }
            parts.append(out)
            for t in texts { parts.append(try t.get()) }
            out = NftTextBytes()
            out.put("}\n")
        }
        parts.append(out)
    }
}

extension NftElement {
    /// nft text of the element in `set` (key [timeout] [comment] [: data]).
    public func text(in set: NftSet) -> String {
        var out = NftTextBytes()
        write(keyTypes: set.key.fieldTypes, dataTypes: set.data?.fieldTypes ?? [], into: &out)
        return out.string
    }

    func write(keyTypes types: [NftDataType], dataTypes dtypes: [NftDataType], into out: inout NftTextBytes) {
        for i in 0..<key.start.count {
            if i > 0 { out.put(" . ") }
            let a = key.start[i]
            let ty = i < types.count ? types[i] : a.type
            out.value(a.bytes, type: ty)
            if let end = key.end, i < end.count, end[i] != a {
                let b = end[i]
                if (ty == .ipv4Addr || ty == .ipv6Addr), let len = NftBits.prefixLength(start: a.bytes, end: b.bytes) {
                    out.byte(UInt8(ascii: "/"))
                    out.decimal(len)
                } else {
                    out.byte(UInt8(ascii: "-"))
                    out.value(b.bytes, type: ty)
                }
            }
        }
        if let t = timeoutMs { out.put(" timeout "); out.put(NftFormat.duration(ms: t)) }
        if let c = comment { out.put(" comment "); out.quoted(c) }
        if let d = data {
            out.put(" : ")
            switch d {
            case .verdict(let v): v.write(into: &out)
            case .values(let vs):
                for (i, v) in vs.enumerated() {
                    if i > 0 { out.put(" . ") }
                    out.value(v.bytes, type: i < dtypes.count ? dtypes[i] : v.type)
                }
            }
        }
    }
}

extension NftVerdict {
    func write(into out: inout NftTextBytes) {
        switch self {
        case .jump(let c): out.put("jump "); out.put(NftText.name(c))
        case .goto(let c): out.put("goto "); out.put(NftText.name(c))
        default: out.put(description)
        }
    }
}

struct NftDecompileError: Error {
    var reason: String
}

extension NftRule {
    /// The nft text of this rule. Throws when the expression sequence has no nft syntax
    /// (the caller's sets are needed to split concatenations).
    public func renderText(family: NftFamily, sets: [NftSet]) throws -> String {
        do {
            return try text(family: family, sets: Dictionary(sets.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a }))
        } catch let e as NftDecompileError {
            throw NftModelError.unrenderable(table: family.rawValue, chain: "?", rule: 0, reason: e.reason)
        }
    }

    /// The same, with the sets already indexed by name (build the index once per table, not per rule).
    public func renderText(family: NftFamily, setsByName: [String: NftSet]) throws -> String {
        do {
            return try text(family: family, sets: setsByName)
        } catch let e as NftDecompileError {
            throw NftModelError.unrenderable(table: family.rawValue, chain: "?", rule: 0, reason: e.reason)
        }
    }

    func text(family: NftFamily, sets: [String: NftSet]) throws -> String {
        var d = Decompiler(family: family, sets: sets)
        try write(using: &d)
        return d.out.string
    }

    /// Appends the text to the decompiler's output (which a chain's rules share).
    func write(using d: inout Decompiler) throws {
        d.startRule()
        for i in exprs.indices {
            try d.add(exprs[i])
            if d.regs.overflowed { throw NftDecompileError(reason: "a value written past the 16 register words") }
        }
        if let comment {
            d.separate()
            d.out.put("comment ")
            d.out.quoted(comment)
        }
    }
}

/// Symbolic register contents while decompiling a rule.
enum Sym {
    case field(NftField)
    /// A payload load of the first `bytes` bytes of an address field (prefix match).
    case partial(NftField, bytes: Int)
    case masked(NftField, mask: NftBytes, xor: NftBytes)
    case data(NftBytes)
    /// The result of a data-map lookup: key text, map name, data field types; `part` is the
    /// index of the data field this register holds.
    case mapped(key: String, map: String, types: [NftDataType], part: Int)
}

struct Decompiler {
    let family: NftFamily
    let sets: [String: NftSet]
    /// Register contents by 32-bit word (16 words; nil: not written).
    var regs: Registers
    /// The text written so far (a whole chain when rendering a table); the current rule starts
    /// at `ruleStart`, its statements separated by single spaces.
    var out = NftTextBytes()
    var ruleStart = 0
    /// The network protocol implied so far (for inet tables): set by `meta nfproto`.
    var netFamily: NftFamily

    init(family: NftFamily, sets: [String: NftSet]) {
        self.family = family
        self.sets = sets
        self.netFamily = family
        self.regs = Registers()
    }

    /// Ready for the next rule, written from the current end of `out`.
    mutating func startRule() {
        regs.clear()
        ruleStart = out.count
        netFamily = family
    }

    /// Registers as a fixed array: a rule touches a handful, and a dictionary per rule cost
    /// a hash table per rule.
    struct Registers {
        private var words = [Sym?](repeating: nil, count: 16)
        /// Set when a value was written past the kernel's 16 words (the rule is then refused).
        private(set) var overflowed = false
        subscript(slot: Int) -> Sym? {
            get { slot >= 0 && slot < 16 ? words[slot] : nil }
            set {
                if slot >= 0 && slot < 16 { words[slot] = newValue } else if newValue != nil { overflowed = true }
            }
        }
        mutating func removeValue(forKey slot: Int) { self[slot] = nil }
        mutating func clear() {
            for i in 0..<16 where words[i] != nil { words[i] = nil }
            overflowed = false
        }
    }

    /// Starts a statement: a space after the previous one.
    @inline(__always) mutating func separate() {
        if out.count > ruleStart { out.byte(UInt8(ascii: " ")) }
    }

    /// Appends one statement to the rule's text.
    mutating func emit(_ s: String) {
        separate()
        out.put(s)
    }

    /// The text of a field, as `NftField.text` (without building a String for the common ones).
    mutating func putField(_ f: NftField) {
        switch f {
        case .meta(let k): out.put("meta "); out.put(k.name)
        case .numgen(let t, let m, let o):
            out.put("numgen "); out.put(t.text); out.put(" mod "); out.decimal(m)
            if o != 0 { out.put(" offset "); out.decimal(o) }
        default: out.put(f.text)
        }
    }

    func fail(_ r: String) -> NftDecompileError { NftDecompileError(reason: r) }

    func slot(_ r: NftRegister) throws -> Int {
        guard let s = r.slot else { throw fail("unexpected verdict register") }
        return s
    }

    mutating func put(_ r: NftRegister, _ sym: Sym, words: Int = 1) throws {
        let s = try slot(r)
        for i in 0..<max(1, words) { regs.removeValue(forKey: s + i) }
        regs[s] = sym
    }

    func sym(_ r: NftRegister) throws -> Sym {
        guard let v = regs[try slot(r)] else { throw fail("\(r) read before it was written") }
        return v
    }

    func payloadField(_ base: NftPayloadBase, _ offset: UInt32, _ len: UInt32) -> Sym? {
        let candidates: [NftField]
        switch (base, netFamily) {
        case (.network, .ip6): candidates = [.ip6Saddr, .ip6Daddr, .ip6Nexthdr]
        case (.network, _): candidates = [.ipSaddr, .ipDaddr, .ipProtocol]
        case (.transport, _): candidates = [.thSport, .thDport]
        default: candidates = []
        }
        for f in candidates {
            guard let loc = f.payloadLocation else { continue }
            if loc.offset == offset && loc.len == len { return .field(f) }
            if loc.offset == offset && len < loc.len && (f.dataType == .ipv4Addr || f.dataType == .ipv6Addr) {
                return .partial(f, bytes: Int(len))
            }
        }
        return nil
    }

    /// Text of the concatenation starting at `reg` with the given field types.
    func concatText(_ reg: NftRegister, types: [NftDataType]) throws -> String {
        var s = try slot(reg)
        var parts: [String] = []
        for t in types {
            guard let v = regs[s] else { throw fail("concatenation register \(NftRegister.at(slot: s)) not loaded") }
            if case .data(let d) = v {
                // A constant in a typed position (map data): print it as its type does.
                parts.append(NftValue(type: t, bytes: Array(d.prefix(t.byteLength))).text)
            } else if case .masked(let f, let mask, let xor) = v, f.dataType == .ipv4Addr || f.dataType == .ipv6Addr,
                      xor.allSatisfy({ $0 == 0 }) {
                // A masked address as a key (`ip daddr & 0.0.0.31 vmap @hairpin-sets`).
                parts.append("\(f.text) & \(NftFormat.value(mask, type: f.dataType))")
            } else {
                parts.append(try valueText(v))
            }
            s += max(1, t.paddedLength / 4)
        }
        return parts.joined(separator: " . ")
    }

    /// Text of a register used as a value source.
    func valueText(_ v: Sym) throws -> String {
        switch v {
        case .field(let f): return f.text
        case .data(let d): return NftFormat.hexBytes(d)
        case .mapped(let k, let m, _, let part):
            guard part == 0 else { throw fail("part of a map result used on its own") }
            return "\(k) map @\(NftText.name(m))"
        case .partial: throw fail("partial payload load used as a value")
        case .masked(let f, let mask, let xor):
            guard mask.count == 4 else { throw fail("bitwise on a non-32-bit value") }
            let m = NftValue.hostUInt32(mask), x = NftValue.hostUInt32(xor)
            if x == 0 { return "\(f.text) and \(NftFormat.hex32(m))" }
            if m == 0xffff_ffff { return "\(f.text) xor \(NftFormat.hex32(x))" }
            if m == ~x { return "\(f.text) or \(NftFormat.hex32(x))" }
            throw fail("bitwise and+xor combination")
        }
    }

    func setNamed(_ n: String) throws -> NftSet {
        guard let s = sets[n] else { throw fail("set @\(n) is not in this table") }
        return s
    }

    mutating func add(_ e: NftExpr) throws {
        switch e {
        case .payload(let base, let off, let len, let dreg):
            guard let f = payloadField(base, off, len) else {
                throw fail("payload \(base.text)+\(off)/\(len) has no field name")
            }
            try put(dreg, f, words: Int(len + 3) / 4)
        case .meta(let k, let dreg):
            try put(dreg, .field(.meta(k)), words: k.dataType.paddedLength / 4)
        case .ct(let k, let dreg, let dir):
            try put(dreg, .field(.ct(k, dir)), words: k.dataType.paddedLength / 4)
        case .numgen(let dreg, let m, let t, let o):
            try put(dreg, .field(.numgen(t, modulus: m, offset: o)))
        case .fib(let f, let r, let dreg):
            try put(dreg, .field(.fib(f, r)))
        case .immediateData(let dreg, let d):
            try put(dreg, .data(d), words: (d.count + 3) / 4)
        case .byteorder(let s, let d, _, _, _):
            // Only part of concatenated interval lookups, which regenerate it.
            guard s == d else { throw fail("byteorder between registers") }
        case .bitwise(let s, let d, let mask, let xor):
            guard case .field(let f) = try sym(s) else { throw fail("bitwise on a computed value") }
            try put(d, .masked(f, mask: mask, xor: xor), words: (mask.count + 3) / 4)
        case .cmp(let op, let sreg, let data):
            try cmp(op, try sym(sreg), data)
        case .lookup(let setName, let sreg, let dreg, let invert):
            let set = try setNamed(setName)
            let key = try concatText(sreg, types: set.key.fieldTypes)
            let ref = "@" + NftText.name(setName)
            if let dreg {
                if dreg == .verdict {
                    guard !invert else { throw fail("inverted vmap") }
                    emit("\(key) vmap \(ref)")
                } else {
                    guard case .values(let spec)? = set.data else { throw fail("map lookup in a set") }
                    var s = try slot(dreg)
                    for (i, t) in spec.fieldTypes.enumerated() {
                        regs[s] = .mapped(key: key, map: setName, types: spec.fieldTypes, part: i)
                        s += max(1, t.paddedLength / 4)
                    }
                }
            } else {
                emit(invert ? "\(key) != \(ref)" : "\(key) \(ref)")
            }
        case .verdict(let v):
            separate()
            v.write(into: &out)
        case .counter:
            emit("counter")
        case .notrack:
            emit("notrack")
        case .metaSet(let k, let sreg):
            emit("meta \(k.name) set \(try valueText(try sym(sreg)))")
        case .ctSet(let k, let sreg):
            emit("ct \(k.name) set \(try valueText(try sym(sreg)))")
        case .masq(let flags, let pmin, let pmax):
            guard pmin == nil, pmax == nil else { throw fail("masquerade to a port range") }
            let words = flags.words
            guard flags.subtracting([.random, .fullyRandom, .persistent]).isEmpty else {
                throw fail("masquerade flags 0x\(String(flags.rawValue, radix: 16))")
            }
            emit(words.isEmpty ? "masquerade" : "masquerade " + words.joined(separator: ","))
        case .nat(let type, let fam, let amin, let amax, let pmin, let pmax, let flags):
            try nat(type, fam, amin, amax, pmin, pmax, flags)
        case .dynset(let op, let setName, let sk, let sd, let timeout):
            let set = try setNamed(setName)
            var s = "\(op.text) @\(NftText.name(setName)) { " + (try concatText(sk, types: set.key.fieldTypes))
            if let timeout { s += " timeout \(NftFormat.duration(ms: timeout))" }
            if let sd {
                guard case .values(let spec)? = set.data else { throw fail("dynset data into a set") }
                s += " : " + (try concatText(sd, types: spec.fieldTypes))
            }
            emit(s + " }")
        case .reject(let type, let code):
            emit(try rejectText(type, code))
        case .unknown(let n):
            throw fail("expression \(n) is not modelled")
        }
    }

    mutating func cmp(_ op: NftCmpOp, _ v: Sym, _ data: NftBytes) throws {
        let opText = op == .eq ? "" : op.text + " "
        switch v {
        case .field(let f):
            if case .meta(.nfproto) = f, data.count == 1 {
                if data[0] == 2 { netFamily = .ip } else if data[0] == 10 { netFamily = .ip6 }
            }
            guard data.count == f.dataType.byteLength || f.dataType == .ifname else {
                throw fail("cmp of \(data.count) bytes against \(f.text)")
            }
            if f.dataType == .ifname && data.count != 16 { throw fail("interface name wildcard") }
            separate()
            putField(f)
            out.byte(UInt8(ascii: " "))
            out.put(opText)
            out.value(data, type: f.dataType)
        case .partial(let f, let n):
            guard op == .eq || op == .neq else { throw fail("ordered compare on a prefix") }
            let full = data + [UInt8](repeating: 0, count: f.dataType.byteLength - data.count)
            emit("\(f.text) \(opText)\(NftFormat.value(full, type: f.dataType))/\(n * 8)")
        case .masked(let f, let mask, let xor):
            guard xor.allSatisfy({ $0 == 0 }) else { throw fail("compare after xor") }
            switch f.dataType {
            case .ipv4Addr, .ipv6Addr:
                guard let len = NftBits.prefixLength(ofMask: mask), op == .eq || op == .neq else {
                    throw fail("non-prefix mask on an address")
                }
                separate()
                putField(f)
                out.byte(UInt8(ascii: " "))
                out.put(opText)
                out.value(data, type: f.dataType)
                out.byte(UInt8(ascii: "/"))
                out.decimal(len)
            case .ctState, .ctStatus:
                guard data.allSatisfy({ $0 == 0 }) else { throw fail("ct bits compared with a non-zero value") }
                let names = NftFormat.value(mask, type: f.dataType)
                switch op {
                case .neq: emit("\(f.text) \(names)")
                case .eq: emit("\(f.text) != \(names)")
                default: throw fail("ordered compare on ct bits")
                }
            default:
                guard mask.count == 4 else { throw fail("mask on a non-32-bit value") }
                emit("\(f.text) & \(NftFormat.hex32(NftValue.hostUInt32(mask))) \(op.text) \(NftFormat.value(data, type: f.dataType))")
            }
        case .data, .mapped:
            throw fail("compare against a computed value")
        }
    }

    mutating func nat(_ type: NftNatType, _ fam: NftFamily, _ amin: NftRegister?, _ amax: NftRegister?,
                      _ pmin: NftRegister?, _ pmax: NftRegister?, _ flags: NftNatFlags) throws {
        guard amax == nil, pmax == nil else { throw fail("nat ranges") }
        guard let amin else { throw fail("nat without address") }
        let kw: StaticString = type == .dnat ? "dnat" : "snat"
        let addrType: NftDataType = fam == .ip6 ? .ipv6Addr : .ipv4Addr
        var extra = flags
        // Checked before anything is written.
        enum Source { case address(NftBytes, port: NftBytes?), map(key: String, map: String) }
        let source: Source
        switch try sym(amin) {
        case .data(let a):
            if let pmin {
                guard case .data(let p) = try sym(pmin) else { throw fail("nat port from a computed value") }
                guard flags.contains(.protoSpecified) else { throw fail("nat port without proto flag") }
                extra.remove(.protoSpecified)
                source = .address(a, port: p)
            } else {
                source = .address(a, port: nil)
            }
        case .mapped(let key, let map, let types, let part):
            guard part == 0, types.first == addrType else { throw fail("nat from a map with other data") }
            if let pmin {
                guard case .mapped(_, map, _, 1)? = regs[try slot(pmin)], types.count == 2 else {
                    throw fail("nat port register is not the map's port")
                }
            } else if types.count != 1 {
                throw fail("map data has a port but nat does not use it")
            }
            source = .map(key: key, map: map)
        default:
            throw fail("nat address from an unsupported source")
        }
        guard extra.subtracting([.random, .fullyRandom, .persistent]).isEmpty else {
            throw fail("nat flags 0x\(String(flags.rawValue, radix: 16))")
        }
        separate()
        out.put(kw)
        out.byte(UInt8(ascii: " "))
        out.put(fam.rawValue)
        out.put(" to ")
        switch source {
        case .address(let a, let p?):
            if fam == .ip6 { out.byte(UInt8(ascii: "[")) }
            out.value(a, type: addrType)
            out.put(fam == .ip6 ? "]:" : ":")
            out.value(p, type: .inetService)
        case .address(let a, nil):
            out.value(a, type: addrType)
        case .map(let key, let map):
            out.put(key)
            out.put(" map @")
            out.put(NftText.name(map))
        }
        let words = extra.words
        if !words.isEmpty { out.byte(UInt8(ascii: " ")); out.put(words.joined(separator: ",")) }
    }

    func rejectText(_ type: NftRejectType, _ code: UInt8) throws -> String {
        switch type {
        case .tcpReset:
            return "reject with tcp reset"
        case .icmpUnreach:
            if family == .ip6 || netFamily == .ip6 {
                let names: [UInt8: String] = [0: "no-route", 1: "admin-prohibited", 3: "addr-unreachable", 4: "port-unreachable"]
                return "reject with icmpv6 type \(names[code] ?? String(code))"
            }
            let names: [UInt8: String] = [0: "net-unreachable", 1: "host-unreachable", 2: "prot-unreachable",
                                          3: "port-unreachable", 9: "net-prohibited", 10: "host-prohibited",
                                          13: "admin-prohibited"]
            return "reject with icmp type \(names[code] ?? String(code))"
        case .icmpxUnreach:
            let names: [UInt8: String] = [0: "no-route", 1: "port-unreachable", 2: "host-unreachable", 3: "admin-prohibited"]
            return "reject with icmpx type \(names[code] ?? String(code))"
        }
    }
}

