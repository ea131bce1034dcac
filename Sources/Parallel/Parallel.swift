import Dispatch
import Foundation

/// Data parallelism for the pure compiler: independent pieces (chains to print, objects to
/// decode) are computed on every core and put back together in their original order, so output
/// never depends on scheduling.
public enum Parallel {
    /// Threads to use: `KUBERULES_THREADS` if set, else the cores this process may use
    /// (Foundation honours the affinity mask and cgroup limits).
    public static let cores: Int = {
        if let s = ProcessInfo.processInfo.environment["KUBERULES_THREADS"], let n = Int(s), n > 0 { return n }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }()

    /// `transform` applied to `count` indices, on all cores, results in index order. Small
    /// inputs (below `minimumPerTask` items per core) run on the calling thread. (Inlinable,
    /// like the others here: callers in other modules then get it specialized for their types.)
    @inlinable
    public static func map<T, E: Error>(count: Int, minimumPerTask: Int = 1, _ transform: (Int) throws(E) -> T) throws(E) -> [T] {
        let tasks = min(cores, count / max(1, minimumPerTask))
        if tasks <= 1 {
            var out = [T]()
            out.reserveCapacity(count)
            for i in 0..<count { out.append(try transform(i)) }
            return out
        }
        let results = UnsafeMutableBufferPointer<Result<T, E>?>.allocate(capacity: count)
        results.initialize(repeating: nil)
        defer { results.deinitialize(); results.deallocate() }
        nonisolated(unsafe) let shared = results
        withoutActuallyEscaping(transform) { transform in
            nonisolated(unsafe) let transform = transform
            // Interleaved chunks of indices would share cache lines; contiguous ranges do not.
            DispatchQueue.concurrentPerform(iterations: tasks) { task in
                let lo = count * task / tasks, hi = count * (task + 1) / tasks
                for i in lo..<hi { shared[i] = Result { () throws(E) -> T in try transform(i) } }
            }
        }
        var out = [T]()
        out.reserveCapacity(count)
        for r in results { out.append(try r!.get()) }
        return out
    }
}

extension Parallel {
    /// `transform` of consecutive ranges that cover `0..<count` in order: eight per core when
    /// `count` reaches `minimumCount` and there is more than one core (so uneven runs even out),
    /// else one range.
    @inlinable
    public static func mapRuns<T>(count: Int, minimumCount: Int, _ transform: (Range<Int>) -> T) -> [T] {
        let runs = count < minimumCount || cores == 1 ? 1 : 8 * cores
        if runs == 1 { return [transform(0..<count)] }
        // `cores` workers, each taking the next run when it is done with one (`map` hands each
        // thread a fixed share); never more threads than `cores` (KUBERULES_THREADS).
        let results = UnsafeMutableBufferPointer<T?>.allocate(capacity: runs)
        results.initialize(repeating: nil)
        defer { results.deinitialize(); results.deallocate() }
        nonisolated(unsafe) let shared = results
        let next = RunCounter()
        withoutActuallyEscaping(transform) { transform in
            nonisolated(unsafe) let transform = transform
            DispatchQueue.concurrentPerform(iterations: cores) { _ in
                while case let k = next.take(), k < runs {
                    shared[k] = transform((count * k / runs)..<(count * (k + 1) / runs))
                }
            }
        }
        return results.map { $0! }
    }

    /// `a` and `b` at the same time (one on another thread when there is more than one core);
    /// `a`'s error is returned, not thrown, so that `b`'s result is never lost.
    @inlinable
    public static func both<A, B>(_ a: () throws -> A, _ b: () -> B) -> (Result<A, Error>, B) {
        guard cores > 1 else { return (Result { try a() }, b()) }
        var ra: Result<A, Error>?, rb: B?
        withoutActuallyEscaping(a) { a in
            withoutActuallyEscaping(b) { b in
                nonisolated(unsafe) let a = a, b = b
                nonisolated(unsafe) var outA: Result<A, Error>?, outB: B?
                DispatchQueue.concurrentPerform(iterations: 2) { i in
                    if i == 0 { outA = Result { try a() } } else { outB = b() }
                }
                ra = outA; rb = outB
            }
        }
        return (ra!, rb!)
    }

    /// The byte arrays one after the other in one allocation, copied on every core (the text
    /// of 10,000 services is 15–40 MB: growing one array part by part copies it again and again).
    public static func join(_ parts: [[UInt8]]) -> [UInt8] {
        var offsets = [0]
        offsets.reserveCapacity(parts.count + 1)
        for p in parts { offsets.append(offsets[offsets.count - 1] + p.count) }
        let total = offsets[offsets.count - 1]
        guard total > 0 else { return [] }
        return [UInt8](unsafeUninitializedCapacity: total) { buffer, initialized in
            nonisolated(unsafe) let base = buffer.baseAddress!
            // (Parts are large: a few are worth spreading when the whole is.)
            _ = mapRuns(count: parts.count, minimumCount: total >= 1 << 20 ? 2 : Int.max) { (range: Range<Int>) -> Void in
                for i in range where !parts[i].isEmpty {
                    parts[i].withUnsafeBufferPointer { (base + offsets[i]).initialize(from: $0.baseAddress!, count: $0.count) }
                }
            }
            initialized = total
        }
    }

    /// `array` sorted by `areInIncreasingOrder`, its two halves sorted side by side and then
    /// merged (stable, like `sorted(by:)`).
    @inlinable
    public static func sorted<T>(_ array: [T], by areInIncreasingOrder: (T, T) -> Bool) -> [T] {
        guard cores > 1, array.count >= 4096 else { return array.sorted(by: areInIncreasingOrder) }
        let mid = array.count / 2
        let (a, b) = both({ array[..<mid].sorted(by: areInIncreasingOrder) }, { array[mid...].sorted(by: areInIncreasingOrder) })
        let left = try! a.get(), right = b
        var out = [T]()
        out.reserveCapacity(array.count)
        var i = 0, j = 0
        while i < left.count && j < right.count {
            // Equal elements: the left half's first (stable).
            if areInIncreasingOrder(right[j], left[i]) { out.append(right[j]); j += 1 } else { out.append(left[i]); i += 1 }
        }
        out.append(contentsOf: left[i...])
        out.append(contentsOf: right[j...])
        return out
    }

    /// Drops a large value on a background thread: freeing a tree of a million nodes takes a
    /// noticeable part of a second, which need not be spent on the caller's critical path.
    /// The caller must not keep other references it later releases itself (the last release frees).
    public static func releaseInBackground<T: Sendable>(_ value: T) {
        if keepsReleasedValues {
            keptLock.lock(); kept.append(value); keptLock.unlock()
            return
        }
        guard cores > 1 else { return }
        DispatchQueue.global(qos: .utility).async { withExtendedLifetime(value) {} }
    }

    /// Set by a command that exits soon after latency-sensitive work (`apply`): values given
    /// to `releaseInBackground` are then kept until the process exits, so that no background
    /// thread frees millions of objects beside that work (competing for the second core and
    /// the allocator). The kernel reclaims the memory at exit at once.
    nonisolated(unsafe) public static var keepsReleasedValues = false
    nonisolated(unsafe) private static var kept: [Any] = []
    private static let keptLock = NSLock()
}

/// Hands out 0, 1, 2, … to the workers of `Parallel.mapRuns`.
@usableFromInline
final class RunCounter: @unchecked Sendable {
    @usableFromInline let lock = NSLock()
    @usableFromInline var next = 0
    @usableFromInline init() {}
    @usableFromInline func take() -> Int {
        lock.lock(); defer { lock.unlock() }
        next += 1
        return next - 1
    }
}
