import Parallel
import XCTest

final class ParallelTests: XCTestCase {
    func testMapRunsCoverTheRangeInOrder() {
        for count in [0, 1, 5, 255, 256, 1000, 4097] {
            for minimum in [0, 256, 5000] {
                let runs = Parallel.mapRuns(count: count, minimumCount: minimum) { $0 }
                XCTAssertEqual(runs.flatMap { Array($0) }, Array(0..<count), "count \(count) minimum \(minimum)")
                if count < minimum { XCTAssertEqual(runs.count, 1) }
            }
        }
    }

    func testJoinIsTheConcatenation() {
        var rng = SystemRandomNumberGenerator()
        for parts in [0, 1, 3, 40] {
            for size in [0, 10, 70_000] {
                let input = (0..<parts).map { _ in (0..<Int.random(in: 0...size, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) } }
                XCTAssertEqual(Parallel.join(input), input.flatMap { $0 })
            }
        }
    }

    func testSortedIsStableAndEqualsTheLibrarySort() {
        var rng = SystemRandomNumberGenerator()
        for count in [0, 1, 100, 4096, 10_001] {
            // Few keys, many ties: the tie order (the original index) must survive.
            let items = (0..<count).map { (key: Int.random(in: 0..<50, using: &rng), index: $0) }
            let mine = Parallel.sorted(items) { $0.key < $1.key }
            let theirs = items.sorted { $0.key < $1.key }
            XCTAssertTrue(mine.elementsEqual(theirs) { $0.key == $1.key && $0.index == $1.index }, "count \(count)")
        }
    }
}
