import Crypto
import Foundation
import IptablesBackend

/// What kuberules wrote last time, per chain: a hash of the rules as rendered and a hash of the
/// rules as `iptables-save` printed them right after. A chain is unchanged when both still match
/// (our rendering did not change, and nobody touched the chain in the kernel), exactly as
/// kube-proxy's partial sync skips chains whose rules it wrote before and did not change.
/// Without a state file every chain is written (a full sync, as kube-proxy does at start-up).
public struct SyncState: Codable, Sendable, Equatable {
    public struct Chain: Codable, Sendable, Equatable {
        public var rendered: String
        public var saved: String
    }
    /// Keyed by "table/chain".
    public var chains: [String: Chain] = [:]
    public init() {}

    static func digest(_ lines: [String]) -> String {
        var h = SHA256()
        for l in lines { h.update(data: Array(l.utf8)); h.update(data: [10]) }
        return hex(h.finalize())
    }

    /// The digest of restore text (lines each ending in a newline): equals `digest(lines)` of
    /// the same lines (rules never hold a newline: names and arguments are validated).
    static func digest(_ text: [UInt8]) -> String {
        var h = SHA256()
        h.update(data: text)
        return hex(h.finalize())
    }

    private static func hex(_ digest: SHA256.Digest) -> String {
        let hex = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for b in digest { out.append(hex[Int(b >> 4)]); out.append(hex[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }
}

/// One change of a sync, for listings (`diff`, `apply --dry-run`).
public enum SyncChange: Sendable, Equatable {
    case addChain(table: String, chain: String, rules: Int)
    case changeChain(table: String, chain: String, from: Int, to: Int)
    case deleteChain(table: String, chain: String, rules: Int)
    case insertJump(table: String, rule: String)
    case deleteJump(table: String, rule: String)

    public var line: String {
        switch self {
        case let .addChain(t, c, n): "+ chain \(t) \(c) (\(n) rules)"
        case let .changeChain(t, c, a, b): "~ chain \(t) \(c) (\(a) -> \(b) rules)"
        case let .deleteChain(t, c, n): "- chain \(t) \(c) (\(n) rules)"
        case let .insertJump(t, r): "+ jump \(t) \(r)"
        case let .deleteJump(t, r): "- jump \(t) \(r)"
        }
    }
}

/// The difference between the compiled ruleset and the kernel, and the `iptables-restore --noflush`
/// text that removes it in one restore (one atomic commit per table).
public struct SyncPlan: Sendable {
    public var changes: [SyncChange] = []
    public var unchangedChains = 0
    public var restoreText = ""
    /// Rule lines in the restore text (for "partial vs full" figures).
    public var restoreRules = 0
    public var isEmpty: Bool { changes.isEmpty }

    public var written: Int { changes.filter { if case .addChain = $0 { true } else if case .changeChain = $0 { true } else { false } }.count }
    public var deleted: Int { changes.filter { if case .deleteChain = $0 { true } else { false } }.count }
    public var jumps: Int { changes.filter { if case .insertJump = $0 { true } else if case .deleteJump = $0 { true } else { false } }.count }
}

public enum IptablesSync {
    static let tables = ["filter", "nat"]

    /// Desired vs kernel. `state` nil means: compare the rendered rules with the kernel's as printed
    /// by `canonical` (our rules loaded into a scratch namespace and saved back), or, when that is
    /// nil too, treat every chain as changed (full sync).
    public static func plan(desired: IptablesRuleset, kernel: [String: SavedTable], state: SyncState?,
                            canonical: [String: SavedTable]? = nil) -> SyncPlan {
        var plan = SyncPlan()
        var text = ""
        for name in tables {
            guard let want = desired.table(name) else { continue }
            let have = kernel[name] ?? SavedTable(name: name)
            var head = [String](), body = [UInt8](), bodyRules = 0, tail = [String]()
            var changes = [SyncChange]()
            let wanted = want.canonicalTexts
            let wantedNames = Set(wanted.map(\.chain))
            for (chain, text, count) in wanted {
                guard let current = have.rules[chain] else {
                    changes.append(.addChain(table: name, chain: chain, rules: count))
                    head.append(":\(chain) - [0:0]"); body += text; bodyRules += count
                    continue
                }
                let same: Bool
                if let state {
                    let s = state.chains["\(name)/\(chain)"]
                    same = s?.rendered == SyncState.digest(text) && s?.saved == SyncState.digest(current)
                } else if let canonical {
                    same = canonical[name]?.rules[chain] == current
                } else {
                    same = false
                }
                if same { plan.unchangedChains += 1; continue }
                changes.append(.changeChain(table: name, chain: chain, from: current.count, to: count))
                head.append(":\(chain) - [0:0]"); body += text; bodyRules += count
            }
            // Stale chains of ours: flushed, then deleted after every rewritten chain stopped using them.
            for chain in have.chains where Ownership.isOurs(chain) && !wantedNames.contains(chain) {
                changes.append(.deleteChain(table: name, chain: chain, rules: have.rules[chain]?.count ?? 0))
                head.append(":\(chain) - [0:0]"); tail.append("-X \(chain)")
            }
            // Jumps from the built-in chains, inserted when missing (kube-proxy's order: each -I goes on top).
            for jump in desired.jumps where jump.table == name {
                if !hasJump(jump, in: have) {
                    let rule = "-I \(jump.sourceChain) \(jump.ruleSpec)"
                    changes.append(.insertJump(table: name, rule: rule))
                    tail.append(rule)
                }
            }
            if changes.isEmpty { continue }
            plan.changes += changes
            plan.restoreRules += bodyRules + tail.count
            text += "*\(name)\n"
            for l in head { text += l; text += "\n" }
            text += String(decoding: body, as: UTF8.self)
            for l in tail { text += l; text += "\n" }
            text += "COMMIT\n"
        }
        plan.restoreText = text
        return plan
    }

    /// Is this jump in its built-in chain? Matches the rule as iptables-save prints it.
    static func hasJump(_ jump: IptablesJump, in table: SavedTable) -> Bool {
        let exact = "-A \(jump.sourceChain) \(jump.ruleSpec)"
        for rule in table.rules[jump.sourceChain] ?? [] {
            if rule == exact { return true }
            guard rule.hasSuffix(" -j \(jump.targetChain)") else { continue }
            if !jump.comment.isEmpty && !rule.contains(jump.comment) { continue }
            if jump.comment.isEmpty && rule.contains("--comment") { continue }
            if jump.extraArgs.contains("--ctstate NEW") != rule.contains("--ctstate NEW") { continue }
            return true
        }
        return false
    }

    /// The state to record after a successful restore: every desired chain with its rendered and saved hashes.
    public static func state(desired: IptablesRuleset, kernel: [String: SavedTable]) -> SyncState {
        var s = SyncState()
        for name in tables {
            guard let want = desired.table(name), let have = kernel[name] else { continue }
            for (chain, text, _) in want.canonicalTexts {
                guard let saved = have.rules[chain] else { continue }
                s.chains["\(name)/\(chain)"] = .init(rendered: SyncState.digest(text),
                                                     saved: SyncState.digest(saved))
            }
        }
        return s
    }

    /// Removes every jump into our chains from the built-in chains, then flushes and deletes our chains.
    public static func cleanup(kernel: [String: SavedTable]) -> SyncPlan {
        var plan = SyncPlan()
        var text = ""
        for name in tables {
            guard let have = kernel[name] else { continue }
            var head = [String](), tail = [String](), changes = [SyncChange]()
            for chain in have.chains where Ownership.builtinChains.contains(chain) {
                for rule in have.rules[chain] ?? [] {
                    guard let target = jumpTarget(rule), Ownership.isOurs(target) else { continue }
                    let delete = "-D" + rule.dropFirst(2)
                    changes.append(.deleteJump(table: name, rule: delete))
                    head.append(delete)
                }
            }
            var decls = [String]()
            for chain in have.chains where Ownership.isOurs(chain) {
                changes.append(.deleteChain(table: name, chain: chain, rules: have.rules[chain]?.count ?? 0))
                decls.append(":\(chain) - [0:0]"); tail.append("-X \(chain)")
            }
            if changes.isEmpty { continue }
            plan.changes += changes
            plan.restoreRules += head.count + tail.count
            text += "*\(name)\n"
            for l in decls + head + tail { text += l; text += "\n" }
            text += "COMMIT\n"
        }
        plan.restoreText = text
        return plan
    }

    static func jumpTarget(_ rule: Substring) -> String? { jumpTarget(String(rule)) }
    static func jumpTarget(_ rule: String) -> String? {
        guard let r = rule.range(of: " -j ", options: .backwards) else { return nil }
        return String(rule[r.upperBound...].prefix { $0 != " " })
    }
}
