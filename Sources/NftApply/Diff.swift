import NftModel
import Parallel

/// Kernel version, for behaviour that changed between releases.
public struct NftKernelVersion: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var major: Int
    public var minor: Int

    public init(_ major: Int, _ minor: Int) {
        self.major = major
        self.minor = minor
    }

    /// Parses a release string such as "6.1.0-18-amd64" or "6.18.44-fc".
    public init?(release: String) {
        let nums = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        guard nums.count == 2 else { return nil }
        self.init(nums[0], nums[1])
    }

    public static func < (a: NftKernelVersion, b: NftKernelVersion) -> Bool {
        (a.major, a.minor) < (b.major, b.minor)
    }

    public var description: String { "\(major).\(minor)" }

    /// Since 6.2 a chain can be deleted in the same transaction that removes the last map
    /// element referring to it.
    public var canDeleteChainUnreferencedInSameBatch: Bool { self >= NftKernelVersion(6, 2) }
}

/// Counts per object kind.
public struct NftObjectCounts: Sendable, Hashable, CustomStringConvertible {
    public var tables = 0, chains = 0, sets = 0, elements = 0, rules = 0
    public init() {}
    public var total: Int { tables + chains + sets + elements + rules }
    public var description: String {
        "\(tables) tables, \(chains) chains, \(sets) sets, \(elements) elements, \(rules) rules"
    }
}

/// The result of diffing desired against current state.
public struct NftPlan: Sendable {
    public var changes: [NftChange]
    public var added = NftObjectCounts()
    /// Chains flushed and refilled, sets recreated, elements replaced.
    public var changed = NftObjectCounts()
    public var removed = NftObjectCounts()
    public var unchanged = NftObjectCounts()
    /// Chains flushed but kept for deletion on the next apply (kernels before 6.2).
    public var deferredChainDeletes: [String] = []
    /// The same, per table.
    public var deferredByTable: [NftTableID: [String]] = [:]
    /// Human-readable change listing, one line per change (when `listed`).
    public var listing: [String] = []
    /// Whether `listing` is written: `apply` without `--dry-run` prints no listing, and at
    /// 10,000 services writing one (every added rule as text) was most of a full apply's planning.
    public var listed = true

    /// Adds a line to the listing, when there is one.
    mutating func list(_ line: @autoclosure () -> String) {
        if listed { listing.append(line()) }
    }

    mutating func list(_ lines: @autoclosure () -> [String]) {
        if listed { listing.append(contentsOf: lines()) }
    }

    public var isEmpty: Bool { changes.isEmpty }
}

public enum NftDiffError: Error, Sendable, CustomStringConvertible {
    case invalid(String)
    public var description: String {
        switch self {
        case .invalid(let s): return "invalid desired ruleset: \(s)"
        }
    }
}

/// Pure diff: desired vs current (per table) → minimal ordered change list.
public enum NftDiff {
    /// `current[id]` is the dumped table (nil if absent) for every table in `desired`.
    /// `validate: false` when the caller validated a larger desired ruleset this one is part of.
    /// `listing: false` leaves `NftPlan.listing` empty.
    public static func plan(desired: NftRuleset, current: [NftTableID: NftTable],
                            kernel: NftKernelVersion, validate check: Bool = true, listing: Bool = true) throws -> NftPlan {
        var plan = NftPlan(changes: [])
        plan.listed = listing
        for t in desired.sortedTables {
            if check { try validate(t) }
            diffTable(t, current[t.id] ?? nil, kernel: kernel, into: &plan)
        }
        return plan
    }

    /// Checks names are unique and every jump/goto/set reference resolves inside the table.
    /// The chains marked in `knownChains` (aligned with `t.chains`) and the sets named in
    /// `knownSets` are what the kernel accepted in the last commit: their names count, their
    /// content is not checked again. When every chain is known and no other set holds
    /// verdicts, chain names are not looked at at all (an endpoint change at 10,000 services:
    /// 25,000 names), so a duplicate chain name goes unnoticed then: the backend makes none, and
    /// the kernel would refuse the batch (planned again from a full read).
    public static func validate(_ t: NftTable, knownChains: [Bool]? = nil, knownSets: Set<String> = []) throws {
        // nft's limit (NFT_COMMENT_MAXLEN); userdata TLV lengths are one byte.
        func checkComment(_ c: String?, _ what: @autoclosure () -> String) throws {
            if let c, c.utf8.count > 128 {
                throw NftDiffError.invalid("\(what()): comment longer than 128 bytes")
            }
        }
        try checkComment(t.comment, "\(t.id)")
        let known = knownChains.flatMap { $0.count == t.chains.count ? $0 : nil }
        let check = known.map { m in t.chains.indices.filter { !m[$0] } } ?? Array(t.chains.indices)
        let chainNamesNeeded = known == nil || !check.isEmpty
            || t.sets.contains { !knownSets.contains($0.name) && $0.data == .verdict }
        var chains = Set<String>(minimumCapacity: chainNamesNeeded ? t.chains.count : 0), sets = Set<String>(minimumCapacity: t.sets.count)
        for c in t.chains where chainNamesNeeded && !chains.insert(c.name).inserted {
            throw NftDiffError.invalid("\(t.id): duplicate chain \(c.name)")
        }
        for s in t.sets where !sets.insert(s.name).inserted {
            throw NftDiffError.invalid("\(t.id): duplicate set \(s.name)")
        }
        // Chains, then sets, each checked in runs on every core; the first problem in table
        // order is the one reported (175,000 rules and 200,000 elements at 10,000 services).
        func firstProblem(_ count: Int, minimumCount: Int, _ check: (Int) throws -> Void) throws {
            let problems = Parallel.mapRuns(count: count, minimumCount: minimumCount) { (run: Range<Int>) -> Error? in
                do { for i in run { try check(i) } } catch { return error }
                return nil
            }
            if let first = problems.lazy.compactMap({ $0 }).first { throw first }
        }
        try firstProblem(check.count, minimumCount: 512) { j in
            let k = check[j]
            let c = t.chains[k]
            try checkComment(c.comment, "\(t.id) chain \(c.name)")
            for (i, r) in c.rules.enumerated() {
                try checkComment(r.comment, "\(t.id) chain \(c.name) rule #\(i)")
                for e in r.exprs {
                    if let target = e.referencedChain, !chains.contains(target) {
                        throw NftDiffError.invalid("\(t.id) chain \(c.name) rule #\(i): jump/goto to missing chain \(target)")
                    }
                    if let s = e.referencedSet, !sets.contains(s) {
                        throw NftDiffError.invalid("\(t.id) chain \(c.name) rule #\(i): missing set @\(s)")
                    }
                }
            }
        }
        // Large sets are split so that no core checks 100,000 elements alone.
        var pieces: [(set: Int, range: Range<Int>)] = []
        for (k, s) in t.sets.enumerated() where !knownSets.contains(s.name) {
            pieces.append((k, 0..<min(s.elements.count, 4096)))
            for lo in stride(from: 4096, to: s.elements.count, by: 4096) { pieces.append((k, lo..<min(lo + 4096, s.elements.count))) }
        }
        try firstProblem(pieces.count, minimumCount: 8) { k in
            let (si, range) = pieces[k]
            let s = t.sets[si]
            if range.lowerBound == 0 {
                try checkComment(s.comment, "\(t.id) set \(s.name)")
                if let size = s.size, s.elements.count > Int(size) {
                    throw NftDiffError.invalid("\(t.id) set \(s.name): \(s.elements.count) elements, more than its size \(size)")
                }
            }
            let n = s.key.fieldTypes.count
            for e in s.elements[range] {
                try checkComment(e.comment, "\(t.id) set \(s.name) element")
                if e.key.start.count != n || (e.key.end.map { $0.count != n } ?? false) {
                    throw NftDiffError.invalid("\(t.id) set \(s.name): element key has \(e.key.start.count) fields, the set \(n)")
                }
                if case .verdict(let v)? = e.data, let target = v.chain, !chains.contains(target) {
                    throw NftDiffError.invalid("\(t.id) map \(s.name): element jumps to missing chain \(target)")
                }
                if (e.data == nil) != (s.data == nil) {
                    throw NftDiffError.invalid("\(t.id) set \(s.name): element data does not match the set kind")
                }
                if e.timeoutMs != nil && !s.flags.contains(.timeout) {
                    throw NftDiffError.invalid("\(t.id) set \(s.name): element timeout in a set without flags timeout")
                }
            }
        }
    }

    /// Element identity inside a set; an element whose other attributes change is replaced.
    private static func normalized(_ e: NftElement, in s: NftSet) -> NftElement {
        var e = e
        // The kernel reports an element timeout only when it differs from the set's.
        if e.timeoutMs != nil && e.timeoutMs == s.timeoutMs { e.timeoutMs = nil }
        return e
    }

    private static func diffTable(_ want: NftTable, _ have: NftTable?, kernel: NftKernelVersion, into plan: inout NftPlan) {
        let id = want.id
        let wantSets = want.sortedSets
        let wantChains = want.sortedChains
        let setsByName = Dictionary(want.sets.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })

        guard let have, have.comment == want.comment else {
            if have != nil {
                // Table userdata cannot be updated in place: recreate the table.
                plan.changes.append(.deleteTable(id))
                plan.list("delete table \(id.family.rawValue) \(id.name) (comment changed)")
                plan.added.tables -= 1
                plan.changed.tables += 1
            }
            createAll(want, wantSets, wantChains, setsByName, into: &plan)
            return
        }
        plan.unchanged.tables += 1

        let haveChains = Dictionary(have.chains.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let haveSets = Dictionary(have.sets.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let wantChainNames = Set(want.chains.map { $0.name })
        let wantSetNames = Set(want.sets.map { $0.name })

        // Sets whose definition changed are recreated; chains whose definition changed too.
        let recreatedSets = Set(wantSets.compactMap { s -> String? in
            guard let h = haveSets[s.name] else { return nil }
            return h.sameDefinition(as: s) || h.canStand(for: s) ? nil : s.name
        })
        let recreatedChains = Set(wantChains.compactMap { c -> String? in
            guard let h = haveChains[c.name] else { return nil }
            return h.sameDefinition(as: c) ? nil : c.name
        })
        let staleSets = have.sortedSets.filter { !wantSetNames.contains($0.name) }
        let staleChains = have.sortedChains.filter { !wantChainNames.contains($0.name) }
        let goneChains = recreatedChains.union(staleChains.map { $0.name })
        let goneSets = recreatedSets.union(staleSets.map { $0.name })

        // Chains whose rules must be rewritten: content differs, or they refer to a chain or
        // set that is deleted/recreated in this batch.
        var refill: [NftChain] = []
        var flush: [String] = []
        var replacements: [(chain: String, handle: UInt64, rule: NftRule)] = []
        for c in wantChains {
            guard let h = haveChains[c.name] else { continue }
            let refersToGone = !(goneChains.isEmpty && goneSets.isEmpty) && h.rules.contains { r in
                r.exprs.contains { e in
                    (e.referencedChain.map { goneChains.contains($0) } ?? false)
                        || (e.referencedSet.map { goneSets.contains($0) } ?? false)
                }
            }
            if !recreatedChains.contains(c.name) && !refersToGone && h.rules.count == c.rules.count
                && !sameRules(h.rules, c.rules) && h.rules.allSatisfy({ $0.handle != nil }) {
                // Same number of rules (e.g. an endpoint count or an endpoint-map slot range
                // changed): replace the rules that differ in place, by handle, instead of
                // flushing and refilling the chain.
                for (old, new) in zip(h.rules, c.rules) where !(old == new || old.canonical() == new.canonical()) {
                    replacements.append((c.name, old.handle!, new))
                }
                plan.changed.chains += 1
                plan.changed.rules += c.rules.count
            } else if recreatedChains.contains(c.name) || refersToGone || !sameRules(h.rules, c.rules) {
                if !h.rules.isEmpty { flush.append(c.name) }
                refill.append(c)
                if !recreatedChains.contains(c.name) {
                    plan.changed.chains += 1
                    plan.changed.rules += c.rules.count
                }
            } else {
                plan.unchanged.chains += 1
                plan.unchanged.rules += c.rules.count
            }
        }
        // Stale chains are flushed first (releasing their references), deleted later.
        for c in staleChains where !c.rules.isEmpty { flush.append(c.name) }

        // Element changes in sets that are kept.
        var elementDeletes: [NftSet] = []
        var elementAdds: [NftSet] = []
        for s in wantSets {
            guard let h = haveSets[s.name], !recreatedSets.contains(s.name) else { continue }
            plan.unchanged.sets += 1
            if recreatedChains.isEmpty && h.elements == s.elements {
                plan.unchanged.elements += s.elements.count
                continue
            }
            // Elements equal at the same position on both sides (the usual case when the
            // state is the previously committed desired value) are unchanged: trim the common
            // prefix and suffix, and compare only the rest by key.
            var lo = 0, hiH = h.elements.count, hiW = s.elements.count
            if recreatedChains.isEmpty {
                while lo < hiH && lo < hiW && h.elements[lo] == s.elements[lo] { lo += 1 }
                while hiH > lo && hiW > lo && h.elements[hiH - 1] == s.elements[hiW - 1] { hiH -= 1; hiW -= 1 }
            }
            plan.unchanged.elements += lo + (h.elements.count - hiH)
            let haveRest = h.elements[lo..<hiH], wantRest = s.elements[lo..<hiW]
            var haveByKey: [NftElementKey: NftElement] = [:]
            haveByKey.reserveCapacity(haveRest.count)
            for e in haveRest { haveByKey[e.key] = normalized(e, in: h) }
            var adds: [NftElement] = []
            var dels: [NftElement] = []
            var wantKeys = Set<NftElementKey>()
            wantKeys.reserveCapacity(wantRest.count)
            for e in wantRest {
                wantKeys.insert(e.key)
                if let old = haveByKey[e.key] {
                    // An element jumping to a chain recreated in this batch is re-added too.
                    let target: String?
                    if case .verdict(let v)? = e.data { target = v.chain } else { target = nil }
                    if old == normalized(e, in: s) && !(target.map { recreatedChains.contains($0) } ?? false) {
                        plan.unchanged.elements += 1
                    } else {
                        dels.append(old)
                        adds.append(e)
                        plan.changed.elements += 1
                    }
                } else {
                    adds.append(e)
                    plan.added.elements += 1
                }
            }
            // Dynamic sets are filled from the packet path: never remove what the kernel added.
            if !s.flags.contains(.dynamic) {
                for e in haveRest where !wantKeys.contains(e.key) {
                    // Elements jumping to a chain deleted in this batch must go anyway.
                    dels.append(e)
                    plan.removed.elements += 1
                }
            }
            if !dels.isEmpty { var d = s; d.elements = dels; elementDeletes.append(d) }
            if !adds.isEmpty { var a = s; a.elements = adds; elementAdds.append(a) }
        }

        // Pre-6.2 kernels: a chain that loses its last map reference in this batch cannot be
        // deleted in the same batch: flush it now, delete it on the next apply.
        var deferred = Set<String>()
        if !kernel.canDeleteChainUnreferencedInSameBatch {
            for s in have.sets {
                for e in s.elements {
                    if case .verdict(let v)? = e.data, let target = v.chain, staleChains.contains(where: { $0.name == target }) {
                        deferred.insert(target)
                    }
                }
            }
        }

        // 1. flush chains (changed and stale)
        for c in flush {
            plan.changes.append(.flushChain(id, chain: c))
            plan.list("flush chain \(id.family.rawValue) \(id.name) \(c)")
        }
        // 2. delete elements
        for s in elementDeletes {
            plan.changes.append(.deleteElements(id, s))
            plan.list( s.elements.sorted { $0.key < $1.key }.map {
                "delete element \(id.family.rawValue) \(id.name) \(s.name) { \($0.text(in: s)) }"
            })
        }
        // 3. delete stale and recreated sets (their rules were flushed above)
        for s in staleSets {
            plan.changes.append(.deleteSet(id, set: s.name))
            plan.list("delete \(s.isMap ? "map" : "set") \(id.family.rawValue) \(id.name) \(s.name)")
            plan.removed.sets += 1
            plan.removed.elements += s.elements.count
        }
        for name in recreatedSets.sorted() {
            plan.changes.append(.deleteSet(id, set: name))
            plan.list("delete set \(id.family.rawValue) \(id.name) \(name) (definition changed)")
            plan.changed.sets += 1
        }
        // 4. delete stale and recreated chains
        for c in staleChains {
            plan.removed.chains += 1
            plan.removed.rules += c.rules.count
            if deferred.contains(c.name) {
                plan.deferredChainDeletes.append(c.name)
                plan.deferredByTable[id, default: []].append(c.name)
                plan.list("# chain \(c.name) kept (flushed) until the next apply: kernel \(kernel) < 6.2")
                continue
            }
            plan.changes.append(.deleteChain(id, chain: c.name))
            plan.list("delete chain \(id.family.rawValue) \(id.name) \(c.name)")
        }
        for name in recreatedChains.sorted() {
            plan.changes.append(.deleteChain(id, chain: name))
            plan.list("delete chain \(id.family.rawValue) \(id.name) \(name) (definition changed)")
            plan.changed.chains += 1
        }
        // 5. create chains, 6. sets, 7. elements, 8. rules
        for c in wantChains where haveChains[c.name] == nil || recreatedChains.contains(c.name) {
            var def = c
            def.rules = []
            plan.changes.append(.addChain(id, def))
            plan.list(chainLine(id, c))
            if haveChains[c.name] == nil {
                plan.added.chains += 1
                plan.added.rules += c.rules.count
                refill.append(c)
            }
        }
        for s in wantSets where haveSets[s.name] == nil || recreatedSets.contains(s.name) {
            var def = s
            def.elements = []
            plan.changes.append(.addSet(id, def))
            plan.list(setLine(id, s))
            if haveSets[s.name] == nil { plan.added.sets += 1 }
            plan.added.elements += s.elements.count
            if !s.elements.isEmpty { elementAdds.append(s) }
        }
        for s in elementAdds {
            plan.changes.append(.addElements(id, s))
            plan.list( s.elements.sorted { $0.key < $1.key }.map {
                "add element \(id.family.rawValue) \(id.name) \(s.name) { \($0.text(in: s)) }"
            })
        }
        for (chain, handle, r) in replacements {
            plan.changes.append(.replaceRule(id, chain: chain, handle: handle, r))
            plan.list("replace rule \(id.family.rawValue) \(id.name) \(chain) handle \(handle) " + ruleLine(r, want.family, setsByName))
        }
        let order = Dictionary(wantChains.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        for c in refill.sorted(by: { order[$0.name, default: 0] < order[$1.name, default: 0] }) {
            for r in c.rules {
                plan.changes.append(.addRule(id, chain: c.name, r))
                plan.list("add rule \(id.family.rawValue) \(id.name) \(c.name) " + ruleLine(r, want.family, setsByName))
            }
        }
    }

    /// Rules compared as the kernel reports them (see `NftRule.canonical()`).
    static func sameRules(_ a: [NftRule], _ b: [NftRule]) -> Bool {
        // `==` first: it is O(1) when both sides share storage (a state built from the desired value).
        a == b || (a.count == b.count && zip(a, b).allSatisfy { $0 == $1 || $0.canonical() == $1.canonical() })
    }

    private static func createAll(_ want: NftTable, _ sets: [NftSet], _ chains: [NftChain],
                                  _ setsByName: [String: NftSet], into plan: inout NftPlan) {
        let id = want.id
        plan.changes.append(.addTable(id, comment: want.comment))
        plan.list("add table \(id.family.rawValue) \(id.name)")
        plan.added.tables += 1
        for c in chains {
            var def = c
            def.rules = []
            plan.changes.append(.addChain(id, def))
            plan.list(chainLine(id, c))
            plan.added.chains += 1
        }
        for s in sets {
            var def = s
            def.elements = []
            plan.changes.append(.addSet(id, def))
            plan.list(setLine(id, s))
            plan.added.sets += 1
        }
        for c in chains {
            for r in c.rules {
                plan.changes.append(.addRule(id, chain: c.name, r))
                plan.list("add rule \(id.family.rawValue) \(id.name) \(c.name) " + ruleLine(r, want.family, setsByName))
                plan.added.rules += 1
            }
        }
        // Elements after the rules: binding a map to a rule walks the map's elements, while
        // adding an element only visits the map's bindings (a few dozen rules per endpoint map).
        for s in sets where !s.elements.isEmpty {
            plan.changes.append(.addElements(id, s))
            plan.added.elements += s.elements.count
            plan.list("add element \(id.family.rawValue) \(id.name) \(s.name) { \(s.elements.count) element(s) }")
        }
    }

    private static func chainLine(_ id: NftTableID, _ c: NftChain) -> String {
        var s = "add chain \(id.family.rawValue) \(id.name) \(NftText.name(c.name))"
        if let b = c.base { s += " { type \(b.type.rawValue) hook \(b.hook.rawValue) priority \(b.priority); policy \(b.policy.rawValue); }" }
        return s
    }

    private static func setLine(_ id: NftTableID, _ s: NftSet) -> String {
        var line = "add \(s.isMap ? "map" : "set") \(id.family.rawValue) \(id.name) \(NftText.name(s.name)) { \(s.key.text)"
        switch s.data {
        case .verdict?: line += " : verdict"
        case .values(let d)?: line += " : " + d.fieldTypes.map { $0.nftName }.joined(separator: " . ")
        case nil: break
        }
        if let size = s.size { line += "; size \(size)" }
        if !s.flags.isEmpty { line += "; flags " + s.flags.text }
        if let t = s.timeoutMs { line += "; timeout \(t)ms" }
        return line + "; }"
    }

    private static func ruleLine(_ r: NftRule, _ family: NftFamily, _ setsByName: [String: NftSet]) -> String {
        if let s = try? r.renderText(family: family, setsByName: setsByName) { return s }
        return r.exprs.map { $0.debugText }.joined(separator: " ")
    }
}
