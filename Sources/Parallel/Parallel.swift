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
    /// `count` reaches `minimumCount` (so uneven runs even out), else one range.
    @inlinable
    public static func mapRuns<T>(count: Int, minimumCount: Int, _ transform: (Range<Int>) -> T) -> [T] {
        let runs = count < minimumCount ? 1 : 8 * cores
        return map(count: runs) { (k: Int) -> T in transform((count * k / runs)..<(count * (k + 1) / runs)) }
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

    /// Drops a large value on a background thread: freeing a tree of a million nodes takes a
    /// noticeable part of a second, which need not be spent on the caller's critical path.
    /// The caller must not keep other references it later releases itself (the last release frees).
    public static func releaseInBackground<T: Sendable>(_ value: T) {
        guard cores > 1 else { return }
        DispatchQueue.global(qos: .utility).async { withExtendedLifetime(value) {} }
    }
}
