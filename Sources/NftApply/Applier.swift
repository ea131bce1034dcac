import NftModel
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension NftKernelVersion {
    /// The running kernel's version (uname), or nil if it cannot be parsed.
    public static func running() -> NftKernelVersion? {
        var u = utsname()
        guard uname(&u) == 0 else { return nil }
        let release = withUnsafeBytes(of: &u.release) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        return NftKernelVersion(release: release)
    }
}

/// What an apply did.
public struct NftApplyReport: Sendable {
    public var added = NftObjectCounts()
    public var changed = NftObjectCounts()
    public var removed = NftObjectCounts()
    public var unchanged = NftObjectCounts()
    /// Netlink messages and bytes of the committed batch (0 when nothing changed).
    public var messages = 0
    public var bytes = 0
    /// Attempts made (more than 1 after concurrent changes, ERESTART).
    public var attempts = 0
    /// Seconds from the first read to the end of the commit.
    public var elapsedSeconds = 0.0
    public var deferredChainDeletes: [String] = []
    /// Human-readable change listing (the `diff` / `--dry-run` output).
    public var listing: [String] = []
    /// False for a dry run.
    public var committed = false

    public var summary: String {
        "added \(added.total), changed \(changed.total), removed \(removed.total), unchanged \(unchanged.total) objects; "
            + "\(messages) messages, \(bytes) bytes, \(attempts) attempt(s), "
            + "\(Int((elapsedSeconds * 1000).rounded())) ms"
    }
}

public enum NftApplyError: Error, Sendable, CustomStringConvertible {
    case tooManyRestarts(Int)
    public var description: String {
        switch self {
        case .tooManyRestarts(let n): return "the ruleset kept changing concurrently: gave up after \(n) attempts"
        }
    }
}

/// Reads the named tables, diffs them against the desired ruleset, commits the difference in
/// one batch (retrying on concurrent changes). It only ever reads or writes the tables named
/// in the desired ruleset.
public final class NftApplier {
    public let kernel: NftKernel
    public let kernelVersion: NftKernelVersion
    public var maxAttempts: Int
    /// Test hook: runs after the state was read and diffed, right before the commit
    /// (argument: the attempt number, from 1).
    public var beforeCommit: ((Int) throws -> Void)?
    /// Reuse the state this applier committed while the kernel's generation proves nobody
    /// changed the ruleset since (reading 100k elements back costs seconds). Sets whose
    /// elements can expire (timeouts) with desired elements disable it.
    public var reuseCommittedState = true
    /// The tables as of `generation` (nil value: the table did not exist).
    private var known: (generation: UInt32, tables: [NftTableID: NftTable?])?
    /// Whether the last read came from the kernel (false: from the state this applier committed).
    public private(set) var lastReadFromKernel = true

    public init(kernel: NftKernel, kernelVersion: NftKernelVersion? = nil, maxAttempts: Int = 5) {
        self.kernel = kernel
        self.kernelVersion = kernelVersion ?? NftKernelVersion.running() ?? NftKernelVersion(6, 2)
        self.maxAttempts = maxAttempts
    }

    /// Reads the current state of the desired tables (consistent with `generation`): from the
    /// kernel, or from what this applier committed if the generation is unchanged since.
    public func read(_ desired: NftRuleset) throws -> (generation: UInt32, tables: [NftTableID: NftTable]) {
        if reuseCommittedState, let known, !Self.hasExpiringElements(desired),
           desired.tables.allSatisfy({ known.tables.keys.contains($0.id) }),
           try kernel.generation() == known.generation {
            lastReadFromKernel = false
            var tables: [NftTableID: NftTable] = [:]
            for t in desired.tables { if let have = known.tables[t.id] ?? nil { tables[t.id] = have } }
            return (known.generation, tables)
        }
        lastReadFromKernel = true
        while true {
            let gen = try kernel.generation()
            var tables: [NftTableID: NftTable] = [:]
            for t in desired.tables {
                if let have = try kernel.dumpTable(t.id) { tables[t.id] = have }
            }
            // A change during the dump makes the snapshot inconsistent: read again.
            if try kernel.generation() == gen {
                remember(gen, desired, tables)
                return (gen, tables)
            }
        }
    }

    private func remember(_ gen: UInt32, _ desired: NftRuleset, _ tables: [NftTableID: NftTable]) {
        var m: [NftTableID: NftTable?] = [:]
        for t in desired.tables { m[t.id] = .some(tables[t.id]) }
        known = (gen, m)
    }

    static func hasExpiringElements(_ r: NftRuleset) -> Bool {
        r.tables.contains { $0.sets.contains { s in
            s.flags.contains(.timeout) && !s.elements.isEmpty || s.elements.contains { $0.timeoutMs != nil }
        } }
    }

    /// Forgets the remembered state: the next apply reads the kernel.
    public func forgetState() { known = nil }

    /// The change plan, without committing (`diff`, `--dry-run`).
    public func plan(_ desired: NftRuleset) throws -> NftPlan {
        let state = try read(desired)
        return try NftDiff.plan(desired: desired, current: state.tables, kernel: kernelVersion)
    }

    /// Makes the kernel's tables equal to `desired` (only the tables it names).
    @discardableResult
    public func apply(_ desired: NftRuleset, dryRun: Bool = false) throws -> NftApplyReport {
        let start = NftClock.now()
        var report = NftApplyReport()
        for attempt in 1...max(1, maxAttempts) {
            report.attempts = attempt
            let state = try read(desired)
            let plan = try NftDiff.plan(desired: desired, current: state.tables, kernel: kernelVersion)
            report.added = plan.added
            report.changed = plan.changed
            report.removed = plan.removed
            report.unchanged = plan.unchanged
            report.listing = plan.listing
            report.deferredChainDeletes = plan.deferredChainDeletes
            if dryRun || plan.isEmpty {
                if plan.isEmpty && !dryRun {
                    // The kernel holds exactly the desired state: remember it in the desired
                    // order, which lets the next diff compare elements by position.
                    var tables: [NftTableID: NftTable] = [:]
                    for t in desired.tables { tables[t.id] = t }
                    remember(state.generation, desired, tables)
                }
                report.elapsedSeconds = NftClock.now() - start
                return report
            }
            try beforeCommit?(attempt)
            do {
                let stats = try kernel.commit(plan.changes, generation: state.generation)
                // Our batch is the only change iff the generation moved by exactly one.
                known = nil
                if try kernel.generation() == state.generation &+ 1 {
                    var tables: [NftTableID: NftTable] = [:]
                    for t in desired.tables {
                        var t = t
                        // Chains kept for deletion on the next apply are still in the kernel (empty).
                        for name in plan.deferredByTable[t.id] ?? [] { t.chains.append(NftChain(name: name)) }
                        tables[t.id] = t
                    }
                    remember(state.generation &+ 1, desired, tables)
                }
                report.messages = stats.messages
                report.bytes = stats.bytes
                report.committed = true
                report.elapsedSeconds = NftClock.now() - start
                return report
            } catch NftKernelError.generationChanged {
                continue
            }
        }
        throw NftApplyError.tooManyRestarts(maxAttempts)
    }

    /// Deletes our table (family, name) if it exists; touches nothing else (it does not read
    /// the table: a missing table is reported by the kernel as ENOENT).
    @discardableResult
    public func cleanup(family: NftFamily, table: String) throws -> Bool {
        let id = NftTableID(family, table)
        for _ in 1...max(1, maxAttempts) {
            let gen = try kernel.generation()
            known = nil
            do {
                _ = try kernel.commit([.deleteTable(id)], generation: gen)
                return true
            } catch NftKernelError.generationChanged {
                continue
            } catch NftKernelError.batchRefused(let errs) where errs.count == 1 && errs[0].errno == 2 {
                return false
            }
        }
        throw NftApplyError.tooManyRestarts(maxAttempts)
    }
}

/// Monotonic seconds.
enum NftClock {
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
