// The nftables value model: what a kernel ruleset is, as plain Sendable values.
//
// Everything here is pure Swift. A rule is an ordered list of `NftExpr`, each of which maps
// 1:1 onto one netlink expression; the builders in Builders.swift produce the exact sequences
// `nft` emits for the equivalent text, and Render.swift turns the same values back into an
// `nft -f` script.

/// nftables address family of a table.
public enum NftFamily: String, Sendable, Hashable, CaseIterable, Comparable {
    case ip, ip6, inet

    /// NFPROTO_* value used on netlink.
    public var netlinkValue: UInt8 {
        switch self {
        case .ip: return 2      // NFPROTO_IPV4
        case .ip6: return 10    // NFPROTO_IPV6
        case .inet: return 1    // NFPROTO_INET
        }
    }

    public init?(netlinkValue: UInt8) {
        switch netlinkValue {
        case 2: self = .ip
        case 10: self = .ip6
        case 1: self = .inet
        default: return nil
        }
    }

    public static func < (a: NftFamily, b: NftFamily) -> Bool {
        a.sortIndex < b.sortIndex
    }

    private var sortIndex: Int {
        switch self {
        case .ip: return 0
        case .ip6: return 1
        case .inet: return 2
        }
    }
}

/// Fingerprints of a table's chains and sets, aligned with its `chains` and `sets` as built,
/// each with the object's name (a fingerprint is used only where the name at that position is
/// the same: a table whose chains or sets were reordered or edited since does not use them). A
/// fingerprint stands for the plan values the object is built from, so an object whose
/// fingerprint equals the one committed last is what the kernel holds: `apply` digests it as
/// the fingerprint instead of walking its rules or elements. 0: none (digest the content).
public struct NftObjectFingerprints: Sendable, Equatable {
    public var chainNames: [String] = [], chains: [UInt64] = []
    public var setNames: [String] = [], sets: [UInt64] = []

    public init() {}

    /// The fingerprint of chain `i` of a table whose chain `i` is named `name`, if any.
    @inline(__always) public func chain(_ i: Int, named name: String) -> UInt64? {
        i < chains.count && i < chainNames.count && chains[i] != 0 && chainNames[i] == name ? chains[i] : nil
    }

    /// The fingerprint of set `i` of a table whose set `i` is named `name`, if any.
    @inline(__always) public func set(_ i: Int, named name: String) -> UInt64? {
        i < sets.count && i < setNames.count && sets[i] != 0 && setNames[i] == name ? sets[i] : nil
    }
}

/// A whole desired (or dumped) ruleset: one or more tables.
public struct NftRuleset: Sendable, Hashable {
    public var tables: [NftTable]
    /// Name prefix of our shard tables (`TABLE-services-`): a table of a desired family named
    /// this prefix and two digits that is not in `tables` is ours and stale, and apply deletes it.
    /// Not rendered.
    public var shardTablePrefix: String?
    /// Per table, a fingerprint of what it was built from (see `NftBackend.build`): apply
    /// skips a table whose fingerprint equals the one saved with the last commit. Not rendered;
    /// not part of equality.
    public var fingerprints: [NftTableID: UInt64] = [:]
    /// Per table, fingerprints of single chains and sets (see `NftObjectFingerprints`): `apply`
    /// uses them in the tables whose own fingerprint changed. Not rendered; not part of equality.
    public var objectFingerprints: [NftTableID: NftObjectFingerprints] = [:]

    public static func == (a: NftRuleset, b: NftRuleset) -> Bool { a.tables == b.tables }
    public func hash(into h: inout Hasher) { h.combine(tables) }

    public init(tables: [NftTable] = []) {
        self.tables = tables
    }

    /// The table with this family and name, if present.
    public func table(_ family: NftFamily, _ name: String) -> NftTable? {
        tables.first { $0.family == family && $0.name == name }
    }

    /// Whether `id` is a shard table of ours that `tables` does not name.
    public func isStaleShard(_ id: NftTableID) -> Bool {
        guard let p = shardTablePrefix, id.name.hasPrefix(p), id.name.utf8.count == p.utf8.count + 2,
              id.name.utf8.dropFirst(p.utf8.count).allSatisfy({ $0 >= 48 && $0 <= 57 }),
              tables.contains(where: { $0.family == id.family }) else { return false }
        return !tables.contains { $0.id == id }
    }

    /// Tables sorted by (family, name): the order used by render and diff.
    public var sortedTables: [NftTable] {
        tables.sorted { ($0.family, $0.name) < ($1.family, $1.name) }
    }
}

/// Identifies a table.
public struct NftTableID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var family: NftFamily
    public var name: String

    public init(_ family: NftFamily, _ name: String) {
        self.family = family
        self.name = name
    }

    public static func < (a: NftTableID, b: NftTableID) -> Bool {
        (a.family, a.name) < (b.family, b.name)
    }

    public var description: String { "table \(family.rawValue) \(name)" }
}

public struct NftTable: Sendable, Hashable {
    public var family: NftFamily
    public var name: String
    public var comment: String?
    /// Chains; order has no meaning (render and diff sort by name). Names must be unique.
    public var chains: [NftChain]
    /// Sets and maps; order has no meaning. Names must be unique.
    public var sets: [NftSet]

    public init(family: NftFamily, name: String, comment: String? = nil,
                chains: [NftChain] = [], sets: [NftSet] = []) {
        self.family = family
        self.name = name
        self.comment = comment
        self.chains = chains
        self.sets = sets
    }

    public var id: NftTableID { NftTableID(family, name) }

    public func chain(_ name: String) -> NftChain? { chains.first { $0.name == name } }
    public func set(_ name: String) -> NftSet? { sets.first { $0.name == name } }

    public var sortedChains: [NftChain] { chains.sorted { $0.name < $1.name } }
    /// Sets by name, the dynamic ones (per-service affinity maps) last: the order of render and
    /// of creation. The kernel finds a set by name with a linear walk of the table's sets in
    /// creation order, so the shared sets and maps that most rules name come first.
    public var sortedSets: [NftSet] {
        sets.sorted {
            let a = $0.flags.contains(.dynamic), b = $1.flags.contains(.dynamic)
            return a != b ? b : $0.name < $1.name
        }
    }

    /// Appends a chain and returns its index (convenience for builders).
    @discardableResult
    public mutating func add(_ chain: NftChain) -> Int {
        chains.append(chain)
        return chains.count - 1
    }

    @discardableResult
    public mutating func add(_ set: NftSet) -> Int {
        sets.append(set)
        return sets.count - 1
    }
}

public enum NftChainType: String, Sendable, Hashable {
    case filter, nat, route
}

public enum NftHook: String, Sendable, Hashable {
    case prerouting, input, forward, output, postrouting

    /// NF_INET_* hook number.
    public var netlinkValue: UInt32 {
        switch self {
        case .prerouting: return 0
        case .input: return 1
        case .forward: return 2
        case .output: return 3
        case .postrouting: return 4
        }
    }

    public init?(netlinkValue: UInt32) {
        switch netlinkValue {
        case 0: self = .prerouting
        case 1: self = .input
        case 2: self = .forward
        case 3: self = .output
        case 4: self = .postrouting
        default: return nil
        }
    }
}

public enum NftChainPolicy: String, Sendable, Hashable {
    case accept, drop

    public var netlinkValue: UInt32 { self == .accept ? 1 : 0 }   // NF_ACCEPT / NF_DROP
}

/// The hook attachment of a base chain.
public struct NftBaseChain: Sendable, Hashable {
    public var type: NftChainType
    public var hook: NftHook
    public var priority: Int32
    public var policy: NftChainPolicy

    public init(type: NftChainType, hook: NftHook, priority: Int32, policy: NftChainPolicy = .accept) {
        self.type = type
        self.hook = hook
        self.priority = priority
        self.policy = policy
    }
}

public struct NftChain: Sendable, Hashable {
    public var name: String
    /// nil for a regular chain.
    public var base: NftBaseChain?
    /// Ordered rules.
    public var rules: [NftRule]
    public var comment: String?

    public init(name: String, base: NftBaseChain? = nil, comment: String? = nil, rules: [NftRule] = []) {
        self.name = name
        self.base = base
        self.comment = comment
        self.rules = rules
    }

    /// Convenience: a base chain.
    public static func base(_ name: String, type: NftChainType, hook: NftHook, priority: Int32,
                            policy: NftChainPolicy = .accept, comment: String? = nil,
                            rules: [NftRule] = []) -> NftChain {
        NftChain(name: name, base: NftBaseChain(type: type, hook: hook, priority: priority, policy: policy),
                 comment: comment, rules: rules)
    }

    /// Same chain definition (name, hook, comment), ignoring rules.
    public func sameDefinition(as other: NftChain) -> Bool {
        name == other.name && base == other.base && comment == other.comment
    }
}

/// A rule: an ordered list of netlink-shaped expressions plus an optional comment.
public struct NftRule: Sendable, Hashable {
    public var exprs: [NftExpr]
    public var comment: String?
    /// The kernel's handle, on rules read back from the kernel (used to replace one rule in
    /// place). Not part of a rule's identity: equality and hashing ignore it.
    public var handle: UInt64? = nil

    public static func == (a: NftRule, b: NftRule) -> Bool { a.exprs == b.exprs && a.comment == b.comment }
    public func hash(into h: inout Hasher) { h.combine(exprs); h.combine(comment) }

    public init(_ exprs: [NftExpr], comment: String? = nil) {
        self.exprs = exprs
        self.comment = comment
    }

    /// Builds a rule from statements (see Builders.swift): `NftRule(.l4protoIs(.tcp), .verdict(.accept))`.
    public init(_ statements: NftStatement..., comment: String? = nil) {
        self.init(statements: statements, comment: comment)
    }

    public init(statements: [NftStatement], comment: String? = nil) {
        if statements.count == 1 {
            self.exprs = statements[0].exprs
        } else {
            var e = [NftExpr]()
            e.reserveCapacity(statements.reduce(0) { $0 + $1.exprs.count })
            for st in statements { e.append(contentsOf: st.exprs) }
            self.exprs = e
        }
        self.comment = comment
    }
}

extension NftRuleset {
    /// The same ruleset with every unordered collection sorted (tables by id, chains and
    /// sets by name, elements by key): two rulesets describe the same kernel state exactly
    /// when their canonical forms are equal.
    public func canonical() -> NftRuleset {
        NftRuleset(tables: sortedTables.map { $0.canonical() })
    }
}

extension NftTable {
    public func canonical() -> NftTable {
        var t = self
        t.chains = sortedChains.map { c in
            var c = c
            c.rules = c.rules.map { $0.canonical() }
            return c
        }
        t.sets = sortedSets.map { s in
            var s = s
            s.elements.sort { $0.key < $1.key }
            return s
        }
        return t
    }
}

extension NftRule {
    /// The rule as the kernel reports it back: a NAT expression's implied parts are made
    /// explicit-free (the kernel fills addr/proto max from min and adds the MAP_IPS and
    /// PROTO_SPECIFIED flags itself). Compare rules through this form.
    public func canonical() -> NftRule {
        var r = self
        r.exprs = exprs.map { $0.canonical() }
        return r
    }
}

extension NftExpr {
    public func canonical() -> NftExpr {
        switch self {
        case .nat(let type, let family, let amin, var amax, let pmin, var pmax, var flags):
            if amax == amin { amax = nil }
            if pmax == pmin { pmax = nil }
            if amin != nil { flags.remove(.mapIPs) }
            if pmin != nil { flags.remove(.protoSpecified) }
            return .nat(type: type, family: family, addrMin: amin, addrMax: amax, protoMin: pmin, protoMax: pmax, flags: flags)
        case .masq(let flags, let pmin, var pmax):
            if pmax == pmin { pmax = nil }
            var f = flags
            if pmin != nil { f.remove(.protoSpecified) }
            return .masq(flags: f, protoMin: pmin, protoMax: pmax)
        default:
            return self
        }
    }
}
