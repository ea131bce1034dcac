import NftModel

/// One change in a batch. Element and rule changes carry what the encoder needs (the set's
/// definition for key layout; the rule itself).
public enum NftChange: Sendable, Hashable {
    case addTable(NftTableID, comment: String?)
    case deleteTable(NftTableID)
    /// Create a chain (definition only; rules are added separately).
    case addChain(NftTableID, NftChain)
    /// Delete all rules of a chain.
    case flushChain(NftTableID, chain: String)
    case deleteChain(NftTableID, chain: String)
    /// Create a set (definition only; `elements` is ignored).
    case addSet(NftTableID, NftSet)
    case deleteSet(NftTableID, set: String)
    /// Add `set.elements` to the set (whose definition `set` carries).
    case addElements(NftTableID, NftSet)
    /// Delete `set.elements` from the set.
    case deleteElements(NftTableID, NftSet)
    /// Append a rule to a chain.
    case addRule(NftTableID, chain: String, NftRule)
    /// Replace the rule with this handle, in place (NLM_F_REPLACE).
    case replaceRule(NftTableID, chain: String, handle: UInt64, NftRule)

    public var table: NftTableID {
        switch self {
        case .addTable(let t, _), .deleteTable(let t), .addChain(let t, _), .flushChain(let t, _),
             .deleteChain(let t, _), .addSet(let t, _), .deleteSet(let t, _), .addElements(let t, _),
             .deleteElements(let t, _), .addRule(let t, _, _), .replaceRule(let t, _, _, _):
            return t
        }
    }

    /// The object this change is about, for error messages: `chain ip kuberules services`.
    public var object: String {
        let t = "\(table.family.rawValue) \(table.name)"
        switch self {
        case .addTable, .deleteTable: return "table \(t)"
        case .addChain(_, let c): return "chain \(t) \(c.name)"
        case .flushChain(_, let c), .deleteChain(_, let c): return "chain \(t) \(c)"
        case .addSet(_, let s): return "\(s.isMap ? "map" : "set") \(t) \(s.name)"
        case .deleteSet(_, let s): return "set \(t) \(s)"
        case .addElements(_, let s), .deleteElements(_, let s):
            return "\(s.elements.count) element(s) of \(s.isMap ? "map" : "set") \(t) \(s.name)"
        case .addRule(_, let c, _): return "rule in chain \(t) \(c)"
        case .replaceRule(_, let c, let h, _): return "rule handle \(h) in chain \(t) \(c)"
        }
    }

    /// A one-line, human-readable description (used by `diff` / `--dry-run`).
    public var summary: String {
        let t = "\(table.family.rawValue) \(NftText.name(table.name))"
        switch self {
        case .addTable(_, let c): return "add table \(t)" + (c.map { " comment \(NftFormat.quoted($0))" } ?? "")
        case .deleteTable: return "delete table \(t)"
        case .addChain(_, let c):
            var s = "add chain \(t) \(NftText.name(c.name))"
            if let b = c.base { s += " { type \(b.type.rawValue) hook \(b.hook.rawValue) priority \(b.priority); policy \(b.policy.rawValue); }" }
            return s
        case .flushChain(_, let c): return "flush chain \(t) \(NftText.name(c))"
        case .deleteChain(_, let c): return "delete chain \(t) \(NftText.name(c))"
        case .addSet(_, let s): return "add \(s.isMap ? "map" : "set") \(t) \(NftText.name(s.name)) { \(s.key.text) }"
        case .deleteSet(_, let s): return "delete set \(t) \(NftText.name(s))"
        case .addElements(_, let s), .deleteElements(_, let s):
            let verb: String
            if case .addElements = self { verb = "add" } else { verb = "delete" }
            let shown = s.elements.prefix(20).map { $0.text(in: s) }.joined(separator: ", ")
            let more = s.elements.count > 20 ? ", … (\(s.elements.count) in all)" : ""
            return "\(verb) element \(t) \(NftText.name(s.name)) { \(shown)\(more) }"
        case .addRule(_, let c, let r):
            return "add rule \(t) \(NftText.name(c)) " + ruleText(r)
        case .replaceRule(_, let c, let h, let r):
            return "replace rule \(t) \(NftText.name(c)) handle \(h) " + ruleText(r)
        }
    }

    private func ruleText(_ r: NftRule) -> String {
        // Rules are listed with their expression bytecode when the text form needs set
        // definitions we do not carry here.
        if let text = try? r.renderText(family: table.family, sets: []) { return text }
        return r.exprs.map { $0.debugText }.joined(separator: " ") + (r.comment.map { " comment \(NftFormat.quoted($0))" } ?? "")
    }
}

/// An error for one message of a batch, mapped back to the change that caused it.
public struct NftObjectError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Index of the change in the committed list (nil if the message was the batch frame).
    public var changeIndex: Int?
    /// The object, e.g. `chain ip kuberules services`.
    public var object: String
    public var errno: Int32
    public var message: String

    public init(changeIndex: Int?, object: String, errno: Int32, message: String) {
        self.changeIndex = changeIndex
        self.object = object
        self.errno = errno
        self.message = message
    }

    public var description: String { "\(object): \(message) (errno \(errno))" }
}

public enum NftKernelError: Error, Sendable, CustomStringConvertible {
    /// The kernel refused the batch; nothing was applied.
    case batchRefused([NftObjectError])
    /// The ruleset changed since the generation read (ERESTART): re-read and retry.
    case generationChanged
    /// A dump or socket operation failed.
    case io(operation: String, errno: Int32, message: String)
    /// A dumped object could not be decoded into the model.
    case decode(object: String, reason: String)

    public var description: String {
        switch self {
        case .batchRefused(let errs):
            return "batch refused, nothing applied: " + errs.map { $0.description }.joined(separator: "; ")
        case .generationChanged: return "ruleset changed concurrently (ERESTART)"
        case .io(let op, let e, let m): return "\(op) failed: \(m) (errno \(e))"
        case .decode(let o, let r): return "cannot decode \(o): \(r)"
        }
    }
}

/// What a commit cost.
public struct NftCommitStats: Sendable, Hashable {
    public var messages: Int
    public var bytes: Int
    public init(messages: Int = 0, bytes: Int = 0) {
        self.messages = messages
        self.bytes = bytes
    }
}

/// The kernel as the applier sees it. Two implementations: `NftNetlink` (real) and
/// `FakeNftKernel` (in memory).
public protocol NftKernel: AnyObject {
    /// The ruleset generation (NFT_MSG_GETGEN).
    func generation() throws -> UInt32
    /// The table with its chains, rules, sets and elements, or nil if it does not exist.
    /// Only this table is read.
    func dumpTable(_ id: NftTableID) throws -> NftTable?
    /// Part of a table: its own attributes, the named chains with their rules and the named
    /// sets with their elements (names that do not exist are left out), or nil if the table
    /// does not exist. Nothing else of the table is read.
    func dumpTable(_ id: NftTableID, chains: Set<String>, sets: Set<String>) throws -> NftTable?
    /// The names of every table in the namespace (nothing else is read).
    func tableIDs() throws -> [NftTableID]
    /// Commits the changes as ONE batch carrying `generation` (NFNL_BATCH_GENID).
    /// Throws `NftKernelError.generationChanged` on ERESTART and `.batchRefused` with
    /// per-change errors otherwise; in both cases nothing was applied.
    func commit(_ changes: [NftChange], generation: UInt32) throws -> NftCommitStats

    /// `commit`, running `during` on another core while the kernel works through the batch
    /// (not at all if the batch cannot be encoded). The default runs it after a successful
    /// commit. Either way `during` has finished when this returns or throws.
    func commit(_ changes: [NftChange], generation: UInt32, during: () -> Void) throws -> NftCommitStats
}

extension NftKernel {
    public func commit(_ changes: [NftChange], generation: UInt32, during: () -> Void) throws -> NftCommitStats {
        let stats = try commit(changes, generation: generation)
        during()
        return stats
    }
}
