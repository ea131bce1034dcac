import NftModel

/// Size estimates shared by the fake kernel and the netlink encoder's element splitting.
public enum NftBatchLimits {
    /// Upper bound for the nested element list attribute of one message (the kernel's
    /// 16-bit attribute length); we stay well below it.
    public static let maxElementAttributeBytes = 60_000

    /// Rough encoded size of one element in a set (netlink attributes, aligned).
    public static func estimatedElementBytes(_ e: NftElement, in s: NftSet) -> Int {
        let keyLen = s.key.byteLength
        var n = 4 + (4 + 4 + ((keyLen + 3) & ~3))              // element nest + key nest + data attr
        if e.key.end != nil { n += 8 + ((keyLen + 3) & ~3) }
        switch e.data {
        case .verdict(let v)?: n += 4 + 4 + 8 + (v.chain.map { 4 + (($0.utf8.count + 1 + 3) & ~3) } ?? 0)
        case .values?: n += 8 + (((s.data.map { NftMapData.byteLength($0) } ?? 0) + 3) & ~3)
        case nil: break
        }
        if e.timeoutMs != nil { n += 12 }
        if let c = e.comment { n += 4 + ((c.utf8.count + 3 + 3) & ~3) }
        if s.isSingleFieldInterval { n *= 2 }
        return n
    }

    /// Splits a set's elements into chunks whose estimated size stays under the limit.
    public static func chunks(_ s: NftSet, limit: Int = maxElementAttributeBytes) -> [ArraySlice<NftElement>] {
        var out: [ArraySlice<NftElement>] = []
        var start = 0, size = 0
        for (i, e) in s.elements.enumerated() {
            let n = estimatedElementBytes(e, in: s)
            if size + n > limit && i > start {
                out.append(s.elements[start..<i])
                start = i
                size = 0
            }
            size += n
        }
        if start < s.elements.count { out.append(s.elements[start...]) }
        return out
    }
}

extension NftMapData {
    static func byteLength(_ d: NftMapData) -> Int {
        switch d {
        case .verdict: return 0
        case .values(let s): return s.byteLength
        }
    }
}

/// An in-memory kernel: keeps state, applies batches atomically with the kernel's main
/// reference checks, counts messages and bytes, and can be told to fail or to see a
/// concurrent change.
public final class FakeNftKernel: NftKernel {
    public private(set) var tables: [NftTableID: NftTable] = [:]
    public private(set) var generationID: UInt32 = 1
    /// Totals over all commits.
    public private(set) var commits = 0
    public private(set) var totalMessages = 0
    public private(set) var totalBytes = 0
    /// The last committed (or refused) batch.
    public private(set) var lastBatch: [NftChange] = []
    /// Number of dumpTable calls, and the tables dumped.
    public private(set) var dumpedTables: [NftTableID] = []
    /// Returns an errno to make a change fail (the whole batch is then refused).
    public var failWhen: ((NftChange) -> Int32?)?
    /// Bump the generation this many times right before a commit is checked (simulates a
    /// concurrent writer between read and commit).
    public var concurrentChangesBeforeCommit = 0

    public init() {}

    /// Sets up state directly (e.g. a foreign table), bumping the generation.
    public func install(_ table: NftTable) {
        tables[table.id] = table
        generationID &+= 1
    }

    /// Adds an element as the packet path would (dynamic sets).
    public func insertFromPacketPath(_ id: NftTableID, set: String, _ e: NftElement) {
        guard var t = tables[id], let i = t.sets.firstIndex(where: { $0.name == set }) else { return }
        t.sets[i].elements.append(e)
        tables[id] = t
    }

    /// Simulates another process changing the ruleset.
    public func bumpGeneration() { generationID &+= 1 }

    /// Deterministic snapshot of everything.
    public func dump() -> NftRuleset {
        NftRuleset(tables: tables.values.sorted { $0.id < $1.id })
    }

    public func generation() throws -> UInt32 { generationID }

    public func tableIDs() throws -> [NftTableID] { tables.keys.sorted() }

    public func dumpTable(_ id: NftTableID) throws -> NftTable? {
        dumpedTables.append(id)
        return tables[id]
    }

    /// Chains and sets read by partial dumps, in order.
    public private(set) var partiallyDumped: [String] = []

    public func dumpTable(_ id: NftTableID, chains: Set<String>, sets: Set<String>) throws -> NftTable? {
        guard var t = tables[id] else { return nil }
        t.chains = t.chains.filter { chains.contains($0.name) }
        t.sets = t.sets.filter { sets.contains($0.name) }
        partiallyDumped += t.chains.map { "chain " + $0.name } + t.sets.map { "set " + $0.name }
        return t
    }

    public func commit(_ changes: [NftChange], generation: UInt32) throws -> NftCommitStats {
        lastBatch = changes
        while concurrentChangesBeforeCommit > 0 {
            concurrentChangesBeforeCommit -= 1
            generationID &+= 1
        }
        guard generation == generationID else { throw NftKernelError.generationChanged }
        var state = tables
        var errors: [NftObjectError] = []
        var stats = NftCommitStats(messages: 2, bytes: 40)   // batch begin + end
        for (i, c) in changes.enumerated() {
            let (msgs, bytes) = Self.estimate(c)
            stats.messages += msgs
            stats.bytes += bytes
            if let errno = failWhen?(c) {
                errors.append(NftObjectError(changeIndex: i, object: c.object, errno: errno, message: "injected failure"))
                continue
            }
            if let errno = Self.apply(c, to: &state) {
                errors.append(NftObjectError(changeIndex: i, object: c.object, errno: errno, message: Self.errnoText(errno)))
            }
        }
        if !errors.isEmpty { throw NftKernelError.batchRefused(errors) }
        tables = state
        generationID &+= 1
        commits += 1
        totalMessages += stats.messages
        totalBytes += stats.bytes
        return stats
    }

    static func errnoText(_ e: Int32) -> String {
        switch e {
        case 2: return "No such file or directory"
        case 16: return "Device or resource busy"
        case 17: return "File exists"
        case 22: return "Invalid argument"
        default: return "error \(e)"
        }
    }

    static func estimate(_ c: NftChange) -> (Int, Int) {
        switch c {
        case .addElements(_, let s), .deleteElements(_, let s):
            let chunks = NftBatchLimits.chunks(s)
            let bytes = s.elements.reduce(0) { $0 + NftBatchLimits.estimatedElementBytes($1, in: s) }
            return (chunks.count, bytes + chunks.count * 48)
        case .addRule(_, _, let r), .replaceRule(_, _, _, let r):
            return (1, 48 + r.exprs.count * 40 + (r.comment?.utf8.count ?? 0))
        default:
            return (1, 64)
        }
    }

    /// Applies one change; returns an errno on failure.
    static func apply(_ c: NftChange, to state: inout [NftTableID: NftTable]) -> Int32? {
        let ENOENT: Int32 = 2, EBUSY: Int32 = 16, EEXIST: Int32 = 17, EINVAL: Int32 = 22
        let id = c.table
        if case .addTable(_, let comment) = c {
            if state[id] == nil { state[id] = NftTable(family: id.family, name: id.name, comment: comment) }
            return nil
        }
        if case .deleteTable = c {
            return state.removeValue(forKey: id) == nil ? ENOENT : nil
        }
        guard var t = state[id] else { return ENOENT }
        defer { state[id] = t }

        func chainIndex(_ n: String) -> Int? { t.chains.firstIndex { $0.name == n } }
        func setIndex(_ n: String) -> Int? { t.sets.firstIndex { $0.name == n } }
        func chainReferenced(_ n: String) -> Bool {
            t.chains.contains { $0.rules.contains { $0.exprs.contains { $0.referencedChain == n } } }
                || t.sets.contains { $0.elements.contains { e in
                    if case .verdict(let v)? = e.data { return v.chain == n }
                    return false
                } }
        }

        switch c {
        case .addTable, .deleteTable:
            return nil
        case .addChain(_, let ch):
            if let i = chainIndex(ch.name) {
                if t.chains[i].base?.hook != ch.base?.hook || t.chains[i].base?.type != ch.base?.type { return EEXIST }
                t.chains[i].base = ch.base
                return nil
            }
            var def = ch
            def.rules = []
            t.chains.append(def)
        case .flushChain(_, let n):
            guard let i = chainIndex(n) else { return ENOENT }
            t.chains[i].rules = []
        case .deleteChain(_, let n):
            guard let i = chainIndex(n) else { return ENOENT }
            if !t.chains[i].rules.isEmpty || chainReferenced(n) { return EBUSY }
            t.chains.remove(at: i)
        case .addSet(_, let s):
            if let i = setIndex(s.name) { return t.sets[i].sameDefinition(as: s) ? nil : EEXIST }
            var def = s
            def.elements = []
            t.sets.append(def)
        case .deleteSet(_, let n):
            guard let i = setIndex(n) else { return ENOENT }
            if t.chains.contains(where: { $0.rules.contains { $0.exprs.contains { $0.referencedSet == n } } }) { return EBUSY }
            t.sets.remove(at: i)
        case .addElements(_, let s):
            guard let i = setIndex(s.name) else { return ENOENT }
            let def = t.sets[i]
            var index = Dictionary(def.elements.enumerated().map { ($1.key, $0) }, uniquingKeysWith: { a, _ in a })
            for e in s.elements {
                if e.key.start.count != def.key.fieldTypes.count { return EINVAL }
                if (e.data == nil) != (def.data == nil) { return EINVAL }
                if case .verdict(let v)? = e.data, let target = v.chain, chainIndex(target) == nil { return ENOENT }
                if let j = index[e.key] {
                    if t.sets[i].elements[j] != e { return EEXIST }
                    continue
                }
                index[e.key] = t.sets[i].elements.count
                t.sets[i].elements.append(e)
            }
        case .deleteElements(_, let s):
            guard let i = setIndex(s.name) else { return ENOENT }
            let gone = Set(s.elements.map { $0.key })
            let before = t.sets[i].elements.count
            t.sets[i].elements.removeAll { gone.contains($0.key) }
            if before - t.sets[i].elements.count != gone.count { return ENOENT }
        case .addRule(_, let n, let r):
            guard let i = chainIndex(n) else { return ENOENT }
            for e in r.exprs {
                if let target = e.referencedChain, chainIndex(target) == nil { return ENOENT }
                if let s = e.referencedSet, setIndex(s) == nil { return ENOENT }
            }
            var r = r
            r.handle = UInt64(t.chains[i].rules.count + 1)  // unique within the chain: rules are only appended, replaced or flushed
            t.chains[i].rules.append(r)
        case .replaceRule(_, let n, let h, let r):
            guard let i = chainIndex(n), let j = t.chains[i].rules.firstIndex(where: { $0.handle == h }) else { return ENOENT }
            for e in r.exprs {
                if let target = e.referencedChain, chainIndex(target) == nil { return ENOENT }
                if let s = e.referencedSet, setIndex(s) == nil { return ENOENT }
            }
            var r = r
            r.handle = h
            t.chains[i].rules[j] = r
        }
        return nil
    }
}
