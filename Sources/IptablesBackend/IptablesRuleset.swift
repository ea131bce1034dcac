import KubeModel
import Parallel

/// Where chains are declared and rules appended: a table, or a piece of text written on
/// another thread to be added to one (`IptablesText`).
public protocol IptablesSink {
    mutating func declare(_ chain: String)
    mutating func append(_ chain: String, _ args: IptablesArgs)
}

/// The arguments of one rule (`-m comment --comment … -j KUBE-SVC-…`), written as UTF-8
/// straight from a string literal and its interpolations: no String is made per rule (a
/// ruleset at 10,000 services has 370,000 of them).
public struct IptablesArgs: Sendable, ExpressibleByStringInterpolation, CustomStringConvertible {
    public private(set) var bytes: [UInt8]

    public init(_ text: String) { bytes = Array(text.utf8) }
    public init(stringLiteral literal: StaticString) {
        bytes = literal.withUTF8Buffer { Array($0) }
    }
    public init(stringInterpolation: Interpolation) { bytes = stringInterpolation.bytes }

    public var isEmpty: Bool { bytes.isEmpty }
    public var description: String { String(decoding: bytes, as: UTF8.self) }

    public struct Interpolation: StringInterpolationProtocol {
        public typealias StringLiteralType = StaticString
        var bytes: [UInt8] = []

        public init(literalCapacity: Int, interpolationCount: Int) {
            bytes.reserveCapacity(literalCapacity + 24 * interpolationCount)
        }
        public mutating func appendLiteral(_ literal: StaticString) {
            literal.withUTF8Buffer { bytes.append(contentsOf: $0) }
        }
        public mutating func appendInterpolation(_ text: String) {
            var text = text
            text.withUTF8 { bytes.append(contentsOf: $0) }
        }
        public mutating func appendInterpolation(_ args: IptablesArgs) { bytes.append(contentsOf: args.bytes) }
        public mutating func appendInterpolation(_ n: Int) {
            if n >= 0 && n < 10 { bytes.append(0x30 + UInt8(n)); return }
            appendInterpolation(String(n))
        }
        public mutating func appendInterpolation(_ ip: IPAddress) {
            if ip.family == .ipv4 { ip.withIPv4Text(port: nil) { bytes.append(contentsOf: $0) } } else { appendInterpolation(ip.description) }
        }
        public mutating func appendInterpolation<T: CustomStringConvertible>(_ value: T) { appendInterpolation(value.description) }
    }
}

/// Rule lines (`-A CHAIN args`) written as UTF-8 on one thread, in runs of consecutive lines of
/// one chain. The backend writes each service's rules in parallel and adds the pieces to the
/// table in kube-proxy's order; the bytes are kept as written (never copied into per-rule Strings).
public struct IptablesText: Sendable, IptablesSink {
    /// A run of consecutive lines of one chain. `local`: which of the chains declared in this
    /// piece it belongs to (-1: a chain declared elsewhere, such as KUBE-SERVICES). A table files
    /// a piece's own chains without looking their names up.
    struct Run: Sendable { var chain: String; var local: Int; var start: Int; var end: Int; var lines: Int }
    var bytes: [UInt8] = []
    var runs: [Run] = []
    /// The chains declared here, in order.
    private(set) var declared: [String] = []

    public init() {}

    /// Room for about `bytes` of text in `runs` runs.
    public mutating func reserve(bytes n: Int, runs r: Int) {
        bytes.reserveCapacity(n); runs.reserveCapacity(r)
    }

    /// (A chain declared twice here gets two entries, which the table merges.)
    public mutating func declare(_ chain: String) {
        if let last = runs.last, last.local >= 0, last.chain == chain { return }
        declared.append(chain)
        runs.append(Run(chain: chain, local: declared.count - 1, start: bytes.count, end: bytes.count, lines: 0))
    }

    public mutating func append(_ chain: String, _ args: IptablesArgs) {
        let start = bytes.count
        IptablesTable.writeLine(chain, args, into: &bytes)
        if let last = runs.indices.last, runs[last].end == start, runs[last].chain == chain {
            runs[last].end = bytes.count
            runs[last].lines += 1
        } else {
            runs.append(Run(chain: chain, local: localIndex(chain), start: start, end: bytes.count, lines: 1))
        }
    }

    /// The chain's index among those declared here, looked for among the last few declared
    /// (a service's rules go to the chains it declared just before). A chain declared here but
    /// not found is filed by name; the table then merges its two entries.
    private func localIndex(_ chain: String) -> Int {
        if let last = runs.last, last.chain == chain { return last.local }
        var k = declared.count - 1
        while k >= 0 && k >= declared.count - 8 {
            if declared[k] == chain { return k }
            k -= 1
        }
        return -1
    }
}

/// One iptables table (`filter` or `nat`): its chains and their rules, as iptables-restore lines.
/// The rules' text lives in a few large byte buffers (the table's own, and one per added piece);
/// each chain entry is a list of byte ranges in them.
///
/// A chain declared in a piece gets its entry without a name lookup: at 10,000 services that is
/// 120,000 chains, whose filing by name was a fifth of the compile. A name can then have several
/// entries: a chain declared in two pieces, or declared in a piece and also named directly or by
/// another piece (our backends do neither), or appended to by its own piece long after it was
/// declared there. Such entries are merged wherever the chain is read, with their rules in the
/// order they were added.
public struct IptablesTable: Sendable, Equatable, IptablesSink {
    public let name: String
    /// Chain entries in creation order: name, first and last segment (-1: no rules), rules.
    private var names: [String] = []
    private var heads: [Int] = [], tails: [Int] = [], counts: [Int] = []
    /// Entries by name, for chains declared or appended to by name (not declared in a piece).
    private var index: [String: Int] = [:]
    /// Byte ranges of rule text, chained per entry through `next` (-1 ends the list). A
    /// segment's index is its place in the order rules were added.
    private struct Segment: Sendable { var blob: Int; var start: Int; var end: Int; var next: Int }
    private var segments: [Segment] = []
    /// Text buffers: 0 is the table's own (rules appended directly), the rest come from pieces.
    private var blobs: [[UInt8]] = [[]]

    public init(name: String) { self.name = name }

    /// Room for about `n` chains.
    public mutating func reserve(chains n: Int) {
        names.reserveCapacity(n)
        heads.reserveCapacity(n); tails.reserveCapacity(n); counts.reserveCapacity(n)
        segments.reserveCapacity(n + 1024)
    }

    public mutating func declare(_ chain: String) { _ = entry(named: chain) }

    private mutating func entry(named chain: String) -> Int {
        // One hash lookup: passing the defaulted subscript inout inserts `next` when the chain
        // is new (its modify accessor stores the default), and reads the entry otherwise.
        let next = names.count
        let e = Self.value(&index[chain, default: next])
        if e == next { newEntry(chain) }
        return e
    }

    private static func value(_ v: inout Int) -> Int { v }

    private mutating func newEntry(_ chain: String) {
        names.append(chain); heads.append(-1); tails.append(-1); counts.append(0)
    }

    /// Appends `-A CHAIN args` (the chain is declared if needed).
    public mutating func append(_ chain: String, _ args: IptablesArgs) {
        let e = entry(named: chain)
        let start = blobs[0].count
        Self.writeLine(chain, args, into: &blobs[0])
        // Consecutive lines of one chain in the own buffer stay one segment.
        if tails[e] >= 0, segments[tails[e]].blob == 0, segments[tails[e]].end == start, tails[e] == segments.count - 1 {
            segments[tails[e]].end = blobs[0].count
            counts[e] += 1
        } else {
            link(e, Segment(blob: 0, start: start, end: blobs[0].count, next: -1), lines: 1)
        }
    }

    /// Adds the declarations and rules of a piece, in its order.
    public mutating func add(_ text: IptablesText) {
        if text.runs.isEmpty { return }
        let blob = blobs.count
        blobs.append(text.bytes)
        var entries = [Int](repeating: -1, count: text.declared.count)
        for run in text.runs {
            let e: Int
            if run.local < 0 {
                e = entry(named: run.chain)
            } else if entries[run.local] >= 0 {
                e = entries[run.local]
            } else {
                e = names.count
                newEntry(run.chain)
                entries[run.local] = e
            }
            if run.lines > 0 { link(e, Segment(blob: blob, start: run.start, end: run.end, next: -1), lines: run.lines) }
        }
    }

    private mutating func link(_ e: Int, _ segment: Segment, lines: Int) {
        let s = segments.count
        segments.append(segment)
        if tails[e] >= 0 { segments[tails[e]].next = s } else { heads[e] = s }
        tails[e] = s
        counts[e] += lines
    }

    /// Writes the restore line `-A CHAIN args` and its newline.
    static func writeLine(_ chain: String, _ args: IptablesArgs, into out: inout [UInt8]) {
        out.append(contentsOf: "-A ".utf8)
        var chain = chain
        chain.withUTF8 { out.append(contentsOf: $0) }
        if !args.isEmpty { out.append(0x20); out.append(contentsOf: args.bytes) }
        out.append(0x0A)
    }

    /// Chains in declaration order.
    public var chains: [String] {
        var seen = Set<String>()
        return names.filter { seen.insert($0).inserted }
    }

    /// The entries of one chain (a scan: for tests and single lookups).
    private func entries(of chain: String) -> [Int] { names.indices.filter { names[$0] == chain } }

    /// Is the chain declared?
    public func contains(_ chain: String) -> Bool { index[chain] != nil || names.contains(chain) }

    /// The number of rules in a chain (nil: not declared).
    public func ruleCount(_ chain: String) -> Int? {
        let es = entries(of: chain)
        return es.isEmpty ? nil : es.reduce(0) { $0 + counts[$1] }
    }

    /// The number of rules in the table.
    public var totalRules: Int { counts.reduce(0, +) }

    /// One chain's rules as restore text: `-A CHAIN …` lines, each ending in a newline.
    public func chainText(_ chain: String) -> [UInt8] {
        var out = [UInt8]()
        writeRules(entries(of: chain), into: &out)
        return out
    }

    /// One chain's rules as restore lines (these single-chain queries scan the table: for tests
    /// and a few lookups; partial syncs read `canonicalTexts`).
    public func chainLines(_ chain: String) -> [String] { Self.lines(chainText(chain)) }

    static func lines(_ text: [UInt8]) -> [String] {
        text.split(separator: 0x0A).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Every chain with its rules as restore text (`-A …` lines, each ending in a newline) and
    /// their number, in canonical order (for partial syncs; written on every core).
    public var canonicalTexts: [(chain: String, text: [UInt8], rules: Int)] {
        let order = canonicalOrder
        let groups = order.groups
        return Parallel.mapRuns(count: groups.count, minimumCount: 1024) { run in
            groups[run].map { g -> (chain: String, text: [UInt8], rules: Int) in
                var text = [UInt8]()
                writeRules(order.entries[g], into: &text)
                return (names[order.entries[g.lowerBound]], text, order.entries[g].reduce(0) { $0 + counts[$1] })
            }
        }.flatMap { $0 }
    }

    /// `canonicalTexts` with each chain's rules as lines.
    public var canonicalRules: [(chain: String, lines: [String])] {
        canonicalTexts.map { ($0.chain, Self.lines($0.text)) }
    }

    /// The rules of one entry, or of several entries of one chain in the order they were added.
    private func writeRules<C: Collection<Int>>(_ entries: C, into out: inout [UInt8]) {
        var segs = [Int]()
        for e in entries {
            var s = heads[e]
            while s >= 0 { segs.append(s); s = segments[s].next }
        }
        if entries.count > 1 { segs.sort() }
        for s in segs { write(segments[s], into: &out) }
    }

    private func writeRules(_ e: Int, into out: inout [UInt8]) {
        var s = heads[e]
        while s >= 0 { write(segments[s], into: &out); s = segments[s].next }
    }

    private func write(_ seg: Segment, into out: inout [UInt8]) {
        blobs[seg.blob].withUnsafeBufferPointer { out.append(contentsOf: UnsafeBufferPointer(rebasing: $0[seg.start..<seg.end])) }
    }

    /// Same chains in the same order with the same rules (however the text is stored).
    public static func == (a: IptablesTable, b: IptablesTable) -> Bool {
        guard a.name == b.name, a.chains == b.chains else { return false }
        return a.canonicalRules.elementsEqual(b.canonicalRules) { $0.chain == $1.chain && $0.lines == $1.lines }
    }

    /// Chains in canonical order: KUBE-NODEPORTS, KUBE-SERVICES, then the rest alphabetically.
    public var canonicalChains: [String] {
        let order = canonicalOrder
        return order.groups.map { names[order.entries[$0.lowerBound]] }
    }

    /// Entries in canonical order, a chain's entries side by side (in creation order);
    /// `starts[k]`: entry k begins a chain (false: it continues the previous one).
    struct CanonicalOrder {
        var entries: [Int]
        var starts: [Bool]
        /// Each chain's range in `entries`.
        var groups: [Range<Int>] {
            guard !entries.isEmpty else { return [] }
            var out = [Range<Int>]()
            var lo = 0
            for k in 1...entries.count where k == entries.count || starts[k] {
                out.append(lo..<k); lo = k
            }
            return out
        }
        /// The end of the chain that starts at `k`.
        func groupEnd(_ k: Int) -> Int {
            var j = k + 1
            while j < entries.count && !starts[j] { j += 1 }
            return j
        }
    }

    var canonicalOrder: CanonicalOrder {
        // Sorted by the first 24 bytes as three big-endian words (all of a KUBE-SEP-… name but
        // its last character), then by the whole name, then by entry: the same order as comparing
        // the Strings (chain names are ASCII), without a String comparison per step.
        typealias Key = (UInt64, UInt64, UInt64, Int)
        struct Keys { var head: [Int] = [], rest: [Key] = [] }
        let keys = Parallel.mapRuns(count: names.count, minimumCount: 4096) { (run: Range<Int>) -> Keys in
            var keys = Keys()
            keys.rest.reserveCapacity(run.count)
            for i in run {
                if names[i] == "KUBE-NODEPORTS" || names[i] == "KUBE-SERVICES" { keys.head.append(i); continue }
                var w: (UInt64, UInt64, UInt64) = (0, 0, 0)
                withUnsafeMutableBytes(of: &w) { raw in
                    var name = names[i]
                    name.withUTF8 { u in
                        for (k, b) in u.prefix(24).enumerated() { raw[k] = b }
                    }
                }
                keys.rest.append((UInt64(bigEndian: w.0), UInt64(bigEndian: w.1), UInt64(bigEndian: w.2), i))
            }
            return keys
        }
        let head = keys.flatMap(\.head)
        let sorted = Parallel.sorted(keys.flatMap(\.rest)) { a, b in
            if a.0 != b.0 { return a.0 < b.0 }
            if a.1 != b.1 { return a.1 < b.1 }
            if a.2 != b.2 { return a.2 < b.2 }
            if names[a.3] != names[b.3] { return names[a.3] < names[b.3] }
            return a.3 < b.3
        }
        var order = CanonicalOrder(entries: [], starts: [])
        order.entries.reserveCapacity(names.count)
        order.starts.reserveCapacity(names.count)
        for fixed in ["KUBE-NODEPORTS", "KUBE-SERVICES"] {
            for (n, e) in head.filter({ names[$0] == fixed }).enumerated() { order.entries.append(e); order.starts.append(n == 0) }
        }
        for (k, key) in sorted.enumerated() {
            order.entries.append(key.3)
            let previous = k > 0 ? sorted[k - 1] : nil
            let same = previous.map { $0.0 == key.0 && $0.1 == key.1 && $0.2 == key.2 && names[$0.3] == names[key.3] } ?? false
            order.starts.append(!same)
        }
        return order
    }

    /// `*table`, chain lines, rules grouped by chain, `COMMIT`, in canonical order, as parts of
    /// UTF-8 text (each written on some core; joined once by the caller).
    public func render(into parts: inout [[UInt8]], extraLines: [String] = []) {
        let order = canonicalOrder
        let count = order.entries.count
        parts.append(Array("*\(name)\n".utf8))
        parts += Parallel.mapRuns(count: count, minimumCount: 4096) { (run: Range<Int>) -> [UInt8] in
            var text = [UInt8]()
            text.reserveCapacity(40 * run.count)
            for k in run where order.starts[k] {
                text.append(UInt8(ascii: ":"))
                var name = names[order.entries[k]]
                name.withUTF8 { text.append(contentsOf: $0) }
                text.append(contentsOf: " - [0:0]\n".utf8)
            }
            return text
        }
        parts += Parallel.mapRuns(count: count, minimumCount: 4096) { (run: Range<Int>) -> [UInt8] in
            var text = [UInt8]()
            for k in run where order.starts[k] {
                let end = order.groupEnd(k)
                if end == k + 1 { writeRules(order.entries[k], into: &text) } else { writeRules(order.entries[k..<end], into: &text) }
            }
            return text
        }
        var tail = [UInt8]()
        for l in extraLines + ["COMMIT"] { tail.append(contentsOf: l.utf8); tail.append(0x0A) }
        parts.append(tail)
    }
}

/// A jump from a built-in chain into one of ours (installed outside the restore text, as kube-proxy does).
public struct IptablesJump: Sendable, Hashable {
    public var table: String
    public var sourceChain: String
    public var targetChain: String
    public var comment: String
    public var extraArgs: String

    public init(table: String, sourceChain: String, targetChain: String, comment: String, extraArgs: String) {
        self.table = table; self.sourceChain = sourceChain; self.targetChain = targetChain
        self.comment = comment; self.extraArgs = extraArgs
    }

    /// The rule specification without the chain: `-m conntrack --ctstate NEW -m comment --comment "…" -j KUBE-…`.
    public var ruleSpec: String {
        var s = extraArgs
        if !comment.isEmpty { s += (s.isEmpty ? "" : " ") + "-m comment --comment \(IptablesRuleset.quote(comment))" }
        s += (s.isEmpty ? "" : " ") + "-j \(targetChain)"
        return s
    }
}

/// The whole kube-proxy iptables ruleset for one IP family.
public struct IptablesRuleset: Sendable, Equatable {
    public var family: IPFamily
    public var filter = IptablesTable(name: "filter")
    public var nat = IptablesTable(name: "nat")
    /// Jumps from PREROUTING/INPUT/FORWARD/OUTPUT/POSTROUTING, in kube-proxy's list order
    /// (each is inserted at the top, so the last one listed ends up first).
    public var jumps: [IptablesJump] = []

    public init(family: IPFamily) { self.family = family }

    /// `iptables-restore` input in canonical order. With `withJumps`, each table section also
    /// inserts the jumps from the built-in chains (`-I CHAIN …`), so that
    /// `iptables-restore --noflush` loads a complete, working ruleset into an empty namespace.
    public func render(withJumps: Bool = false) -> String {
        String(decoding: renderBytes(withJumps: withJumps), as: UTF8.self)
    }

    /// `render(withJumps:)` as UTF-8 bytes, for writing out without a String copy.
    public func renderBytes(withJumps: Bool = false) -> [UInt8] {
        var parts = [[UInt8]]()
        for table in [filter, nat] {
            var extra = [String]()
            if withJumps {
                let js = jumps.filter { $0.table == table.name }
                if !js.isEmpty {
                    extra.append("# jumps from the built-in chains (kube-proxy inserts these outside the restore; each -I goes to the top)")
                    extra += js.map { "-I \($0.sourceChain) \($0.ruleSpec)" }
                }
            }
            table.render(into: &parts, extraLines: extra)
        }
        return Parallel.join(parts)
    }

    public func table(_ name: String) -> IptablesTable? {
        switch name { case "filter": filter; case "nat": nat; default: nil }
    }

    /// Quotes an argument the way kube-proxy writes comments: only when it contains a space.
    static func quote(_ s: String) -> String { s.contains(" ") ? "\"\(s)\"" : s }
}
