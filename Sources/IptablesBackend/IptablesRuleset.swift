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
public struct IptablesArgs: Sendable, ExpressibleByStringInterpolation {
    public private(set) var bytes: [UInt8]

    public init(_ text: String) { bytes = Array(text.utf8) }
    public init(stringLiteral literal: StaticString) {
        bytes = literal.withUTF8Buffer { Array($0) }
    }
    public init(stringInterpolation: Interpolation) { bytes = stringInterpolation.bytes }

    public var isEmpty: Bool { bytes.isEmpty }

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
    struct Run: Sendable { var chain: String; var start: Int; var end: Int; var lines: Int }
    var bytes: [UInt8] = []
    var runs: [Run] = []

    public init() {}

    public mutating func declare(_ chain: String) {
        runs.append(Run(chain: chain, start: bytes.count, end: bytes.count, lines: 0))
    }

    public mutating func append(_ chain: String, _ args: IptablesArgs) {
        let start = bytes.count
        IptablesTable.writeLine(chain, args, into: &bytes)
        if let last = runs.indices.last, runs[last].end == start, runs[last].chain == chain {
            runs[last].end = bytes.count
            runs[last].lines += 1
        } else {
            runs.append(Run(chain: chain, start: start, end: bytes.count, lines: 1))
        }
    }
}

/// One iptables table (`filter` or `nat`): its chains and their rules, as iptables-restore lines.
/// The rules' text lives in a few large byte buffers (the table's own, and one per added piece);
/// each chain is a list of byte ranges in them.
public struct IptablesTable: Sendable, Equatable, IptablesSink {
    public let name: String
    /// Chains in declaration order (fixed chains first, then per-service chains as created).
    public private(set) var chains: [String] = []
    private var index: [String: Int] = [:]
    /// Per chain: its first and last segment (-1: no rules yet) and its number of rules.
    private var heads: [Int] = [], tails: [Int] = [], counts: [Int] = []
    /// Byte ranges of rule text, chained per chain through `next` (-1 ends a chain's list).
    private struct Segment: Sendable { var blob: Int; var start: Int; var end: Int; var next: Int }
    private var segments: [Segment] = []
    /// Text buffers: 0 is the table's own (rules appended directly), the rest come from pieces.
    private var blobs: [[UInt8]] = [[]]

    public init(name: String) { self.name = name }

    /// Room for about `n` chains (a large ruleset otherwise rehashes its chain table many times).
    public mutating func reserve(chains n: Int) {
        chains.reserveCapacity(n); index.reserveCapacity(n)
        heads.reserveCapacity(n); tails.reserveCapacity(n); counts.reserveCapacity(n)
        segments.reserveCapacity(n + 1024)
    }

    public mutating func declare(_ chain: String) { _ = chainIndex(chain) }

    private mutating func chainIndex(_ chain: String) -> Int {
        // One hash lookup: the subscript inserts the next index when the chain is new.
        let next = chains.count
        let i = Self.value(&index[chain, default: next])
        if i == next { chains.append(chain); heads.append(-1); tails.append(-1); counts.append(0) }
        return i
    }

    private static func value(_ v: inout Int) -> Int { v }

    /// Appends `-A CHAIN args` (the chain is declared if needed).
    public mutating func append(_ chain: String, _ args: IptablesArgs) {
        let c = chainIndex(chain)
        let start = blobs[0].count
        Self.writeLine(chain, args, into: &blobs[0])
        // Consecutive lines of one chain in the own buffer stay one segment.
        if tails[c] >= 0, segments[tails[c]].blob == 0, segments[tails[c]].end == start {
            segments[tails[c]].end = blobs[0].count
            counts[c] += 1
        } else {
            link(c, Segment(blob: 0, start: start, end: blobs[0].count, next: -1), lines: 1)
        }
    }

    /// Adds the declarations and rules of a piece, in its order.
    public mutating func add(_ text: IptablesText) {
        if text.runs.isEmpty { return }
        let blob = blobs.count
        blobs.append(text.bytes)
        for run in text.runs {
            let c = chainIndex(run.chain)
            if run.lines > 0 { link(c, Segment(blob: blob, start: run.start, end: run.end, next: -1), lines: run.lines) }
        }
    }

    private mutating func link(_ c: Int, _ segment: Segment, lines: Int) {
        let s = segments.count
        segments.append(segment)
        if tails[c] >= 0 { segments[tails[c]].next = s } else { heads[c] = s }
        tails[c] = s
        counts[c] += lines
    }

    /// Writes the restore line `-A CHAIN args` and its newline.
    static func writeLine(_ chain: String, _ args: IptablesArgs, into out: inout [UInt8]) {
        out.append(contentsOf: "-A ".utf8)
        var chain = chain
        chain.withUTF8 { out.append(contentsOf: $0) }
        if !args.isEmpty { out.append(0x20); out.append(contentsOf: args.bytes) }
        out.append(0x0A)
    }

    /// Is the chain declared?
    public func contains(_ chain: String) -> Bool { index[chain] != nil }

    /// The number of rules in a chain (nil: not declared).
    public func ruleCount(_ chain: String) -> Int? { index[chain].map { counts[$0] } }

    /// The number of rules in the table.
    public var totalRules: Int { counts.reduce(0, +) }

    /// One chain's rules as restore text: `-A CHAIN …` lines, each ending in a newline.
    public func chainText(_ chain: String) -> [UInt8] {
        var out = [UInt8]()
        if let c = index[chain] { writeRules(c, into: &out) }
        return out
    }

    /// One chain's rules as restore lines (for partial syncs).
    public func chainLines(_ chain: String) -> [String] {
        chainText(chain).split(separator: 0x0A).map { String(decoding: $0, as: UTF8.self) }
    }

    private func writeRules(_ c: Int, into out: inout [UInt8]) {
        var s = heads[c]
        while s >= 0 {
            let seg = segments[s]
            blobs[seg.blob].withUnsafeBufferPointer { out.append(contentsOf: UnsafeBufferPointer(rebasing: $0[seg.start..<seg.end])) }
            s = seg.next
        }
    }

    /// Same chains in the same order with the same rules (however the text is stored).
    public static func == (a: IptablesTable, b: IptablesTable) -> Bool {
        a.name == b.name && a.chains == b.chains && a.counts == b.counts
            && a.chains.allSatisfy { a.chainText($0) == b.chainText($0) }
    }

    /// Chains in canonical order: KUBE-NODEPORTS, KUBE-SERVICES, then the rest alphabetically.
    public var canonicalChains: [String] {
        canonicalOrder.map { chains[$0] }
    }

    /// Indices into `chains` in canonical order.
    var canonicalOrder: [Int] {
        var head = [Int]()
        for fixed in ["KUBE-NODEPORTS", "KUBE-SERVICES"] {
            if let i = index[fixed] { head.append(i) }
        }
        // Sorted by the first 24 bytes as three big-endian words (all of a KUBE-SEP-… name but
        // its last character), then by the whole name: the same order as comparing the Strings
        // (chain names are ASCII), without a String comparison per step.
        typealias Key = (UInt64, UInt64, UInt64, Int)
        let keys = Parallel.mapRuns(count: chains.count, minimumCount: 4096) { (run: Range<Int>) -> [Key] in
            var keys = [Key]()
            keys.reserveCapacity(run.count)
            for i in run where chains[i] != "KUBE-NODEPORTS" && chains[i] != "KUBE-SERVICES" {
                var w: (UInt64, UInt64, UInt64) = (0, 0, 0)
                withUnsafeMutableBytes(of: &w) { raw in
                    var name = chains[i]
                    name.withUTF8 { u in
                        for (k, b) in u.prefix(24).enumerated() { raw[k] = b }
                    }
                }
                keys.append((UInt64(bigEndian: w.0), UInt64(bigEndian: w.1), UInt64(bigEndian: w.2), i))
            }
            return keys
        }.flatMap { $0 }
        let sorted = Parallel.sorted(keys) { a, b in
            if a.0 != b.0 { return a.0 < b.0 }
            if a.1 != b.1 { return a.1 < b.1 }
            if a.2 != b.2 { return a.2 < b.2 }
            return chains[a.3] < chains[b.3]
        }
        return head + sorted.map(\.3)
    }

    /// `*table`, chain lines, rules grouped by chain, `COMMIT`, in canonical order, as parts of
    /// UTF-8 text (each written on some core; joined once by the caller).
    public func render(into parts: inout [[UInt8]], extraLines: [String] = []) {
        let order = canonicalOrder
        parts.append(Array("*\(name)\n".utf8))
        parts += Parallel.mapRuns(count: order.count, minimumCount: 4096) { (run: Range<Int>) -> [UInt8] in
            var text = [UInt8]()
            text.reserveCapacity(40 * run.count)
            for c in order[run] {
                text.append(UInt8(ascii: ":"))
                var name = chains[c]
                name.withUTF8 { text.append(contentsOf: $0) }
                text.append(contentsOf: " - [0:0]\n".utf8)
            }
            return text
        }
        parts += Parallel.mapRuns(count: order.count, minimumCount: 4096) { (run: Range<Int>) -> [UInt8] in
            var text = [UInt8]()
            for c in order[run] { writeRules(c, into: &text) }
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
