import KubeModel

/// One iptables table (`filter` or `nat`): its chains and their rules, as iptables-restore lines.
public struct IptablesTable: Sendable, Equatable {
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
        var line = "-A "
        line.reserveCapacity(4 + chain.utf8.count + args.utf8.count)
        line += chain
        if !args.isEmpty { line += " "; line += args }
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
        rest.sort { chains[$0] < chains[$1] }
        return head + rest
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
        for c in order {
            for r in rules[chains[c]]! { line(r) }
        }
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
