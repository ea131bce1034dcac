import KubeModel
import Parallel

/// Where chains are declared and rules appended: a table, or operations recorded to be
/// replayed into one (`IptablesOps`).
public protocol IptablesSink {
    mutating func declare(_ chain: String)
    mutating func append(_ chain: String, _ args: String)
}

/// Declarations and rules recorded (lines built) on another thread, replayed into a table in
/// their order: the backend builds each service's rules in parallel and keeps kube-proxy's order.
struct IptablesOps: IptablesSink {
    private var ops: [(chain: String, line: String?)] = []
    mutating func declare(_ chain: String) { ops.append((chain, nil)) }
    mutating func append(_ chain: String, _ args: String) { ops.append((chain, IptablesTable.line(chain, args))) }
    func replay(into table: inout IptablesTable) {
        for (chain, line) in ops {
            if let line { table.appendLine(chain, line) } else { table.declare(chain) }
        }
    }
}

/// One iptables table (`filter` or `nat`): its chains and their rules, as iptables-restore lines.
public struct IptablesTable: Sendable, Equatable, IptablesSink {
    public let name: String
    /// Chains in declaration order (fixed chains first, then per-service chains as created).
    public private(set) var chains: [String] = []
    /// Rules of each chain, each a full `-A CHAIN …` line, in emission order.
    public private(set) var rules: [String: [String]] = [:]

    public init(name: String) { self.name = name }

    public mutating func declare(_ chain: String) {
        if rules.index(forKey: chain) == nil {
            chains.append(chain)
            rules[chain] = []
        }
    }

    /// Room for about `n` chains (a large ruleset otherwise rehashes its chain table many times).
    public mutating func reserve(chains n: Int) {
        chains.reserveCapacity(n)
        rules.reserveCapacity(n)
    }

    /// Appends `-A CHAIN args` (the chain is declared if needed). One hash lookup per rule.
    public mutating func append(_ chain: String, _ args: String) {
        appendLine(chain, Self.line(chain, args))
    }

    /// The restore line `-A CHAIN args`.
    static func line(_ chain: String, _ args: String) -> String {
        var line = "-A "
        line.reserveCapacity(4 + chain.utf8.count + args.utf8.count)
        line += chain
        if !args.isEmpty { line += " "; line += args }
        return line
    }

    /// Appends a line made by `line(chain, args)`.
    mutating func appendLine(_ chain: String, _ line: String) {
        let before = rules.count
        rules[chain, default: []].append(line)
        if rules.count != before { chains.append(chain) }
    }

    /// Chains in canonical order: KUBE-NODEPORTS, KUBE-SERVICES, then the rest alphabetically.
    public var canonicalChains: [String] {
        canonicalOrder.map { chains[$0] }
    }

    /// Indices into `chains` in canonical order.
    var canonicalOrder: [Int] {
        var head = [Int](), rest = [Int]()
        rest.reserveCapacity(chains.count)
        for fixed in ["KUBE-NODEPORTS", "KUBE-SERVICES"] {
            if let i = chains.firstIndex(of: fixed) { head.append(i) }
        }
        for i in chains.indices where chains[i] != "KUBE-NODEPORTS" && chains[i] != "KUBE-SERVICES" { rest.append(i) }
        // Sorted by the first 24 bytes as three big-endian words (all of a KUBE-SEP-… name but
        // its last character), then by the whole name: the same order as comparing the Strings
        // (chain names are ASCII), without a String comparison per step.
        let keys = rest.map { i -> (UInt64, UInt64, UInt64, Int) in
            var w: (UInt64, UInt64, UInt64) = (0, 0, 0)
            withUnsafeMutableBytes(of: &w) { raw in
                var name = chains[i]
                name.withUTF8 { u in
                    for (k, b) in u.prefix(24).enumerated() { raw[k] = b }
                }
            }
            return (UInt64(bigEndian: w.0), UInt64(bigEndian: w.1), UInt64(bigEndian: w.2), i)
        }
        let sorted = keys.sorted { a, b in
            if a.0 != b.0 { return a.0 < b.0 }
            if a.1 != b.1 { return a.1 < b.1 }
            if a.2 != b.2 { return a.2 < b.2 }
            return chains[a.3] < chains[b.3]
        }
        return head + sorted.map(\.3)
    }

    /// `*table`, chain lines, rules grouped by chain, `COMMIT`, in canonical order; appended
    /// as UTF-8 bytes (no String per line).
    public func render(into out: inout [UInt8], extraLines: [String] = []) {
        func line(_ s: String) { out.append(contentsOf: s.utf8); out.append(0x0A) }
        line("*" + name)
        let order = canonicalOrder
        for c in order {
            out.append(UInt8(ascii: ":"))
            out.append(contentsOf: chains[c].utf8)
            out.append(contentsOf: " - [0:0]\n".utf8)
        }
        // The rules of consecutive runs of chains are written on every core and joined in order.
        let texts = Parallel.mapRuns(count: order.count, minimumCount: 4096) { (run: Range<Int>) -> [UInt8] in
            var text = [UInt8]()
            for c in order[run] {
                for r in rules[chains[c]]! { text.append(contentsOf: r.utf8); text.append(0x0A) }
            }
            return text
        }
        for t in texts { out.append(contentsOf: t) }
        for l in extraLines { line(l) }
        line("COMMIT")
    }

    /// One chain's declaration and rules as restore lines (for partial syncs).
    public func chainLines(_ chain: String) -> [String] { rules[chain] ?? [] }
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
        var out = [UInt8]()
        out.reserveCapacity(filterSizeHint)
        for table in [filter, nat] {
            var extra = [String]()
            if withJumps {
                let js = jumps.filter { $0.table == table.name }
                if !js.isEmpty {
                    extra.append("# jumps from the built-in chains (kube-proxy inserts these outside the restore; each -I goes to the top)")
                    extra += js.map { "-I \($0.sourceChain) \($0.ruleSpec)" }
                }
            }
            table.render(into: &out, extraLines: extra)
        }
        return out
    }

    private var filterSizeHint: Int {
        (filter.rules.values.reduce(0) { $0 + $1.count } + nat.rules.values.reduce(0) { $0 + $1.count }) * 120 + 4096
    }

    public func table(_ name: String) -> IptablesTable? {
        switch name { case "filter": filter; case "nat": nat; default: nil }
    }

    /// Quotes an argument the way kube-proxy writes comments: only when it contains a space.
    static func quote(_ s: String) -> String { s.contains(" ") ? "\"\(s)\"" : s }
}
