import XCTest
import NftModel
import NftApply
@testable import Netlink
import Parallel

/// Batch encoding, no kernel involved (it lives with the netlink tests): the parallel runs give the same
/// bytes as one serial pass — sequence numbers shifted, the ACK on the last message only.
final class BatchEncodingTests: XCTestCase {
    func changes(_ n: Int) -> [NftChange] {
        let id = NftTableID(.ip, "kuberules")
        var c: [NftChange] = [.addTable(id, comment: "t"), .addChain(id, NftChain(name: "c"))]
        for i in 0..<n {
            c.append(.addRule(id, chain: "c", NftRule(.match(.ipDaddr, .eq, .ipv4(10, 0, UInt8(i >> 8 & 255), UInt8(i & 255))), .counter)))
            if i % 100 == 0 {
                c.append(.addSet(id, .set("s\(i)", .types([.ipv4Addr]), elements: (0..<300).map { .element(.ipv4(10, 1, UInt8($0 >> 8), UInt8($0 & 255))) })))
                c.append(.addElements(id, .set("s\(i)", .types([.ipv4Addr]), elements: (0..<300).map { .element(.ipv4(10, 1, UInt8($0 >> 8), UInt8($0 & 255))) })))
            }
        }
        return c
    }

    /// (type, flags, seq) of every message, and the buffer's bytes.
    func messages(_ b: BatchBuffer) -> (headers: [(UInt16, UInt16, UInt32)], bytes: [UInt8]) {
        var out: [(UInt16, UInt16, UInt32)] = []
        var off = 0
        while off < b.used {
            // struct nlmsghdr: u32 len, u16 type, u16 flags, u32 seq, u32 pid
            let p = UnsafeRawPointer(b.base + off)
            let len = p.loadUnaligned(as: UInt32.self)
            out.append((p.loadUnaligned(fromByteOffset: 4, as: UInt16.self), p.loadUnaligned(fromByteOffset: 6, as: UInt16.self),
                        p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
            off += (Int(len) + 3) & ~3
        }
        return (out, Array(UnsafeRawBufferPointer(start: b.base, count: b.used)))
    }

    let ack: UInt16 = 4   // NLM_F_ACK

    func testParallelRunsEncodeTheSameBatchAsOnePass() throws {
        let c = changes(2_000)
        let (serial, serialOwner) = try NftNetlink.encode(c, base: 1000, generation: 7, threshold: .max)
        defer { serial.free() }
        let (parallel, parallelOwner) = try NftNetlink.encode(c, base: 1000, generation: 7, threshold: 1)
        defer { parallel.free() }
        XCTAssertEqual(parallelOwner, serialOwner)
        let a = messages(serial), b = messages(parallel)
        XCTAssertEqual(a.bytes.count, b.bytes.count)
        XCTAssertTrue(a.bytes == b.bytes, "parallel runs must give the serial bytes (padding included)")
        // BEGIN at base, then base+1, base+2, … in order; END last; only the last change's
        // message asks for an ACK.
        XCTAssertEqual(b.headers.map(\.2), Array(1000...(1000 + UInt32(parallelOwner.count) + 1)))
        XCTAssertEqual(b.headers.filter { $0.1 & ack != 0 }.count, 1)
        XCTAssertTrue(b.headers[b.headers.count - 2].1 & ack != 0)
        XCTAssertEqual(parallelOwner.first, 0)
        XCTAssertEqual(parallelOwner.last, c.count - 1)
        XCTAssertEqual(parallelOwner, parallelOwner.sorted(), "messages stay in change order")
    }

    func testBothRunsTheTwoAndKeepsTheFirstError() {
        struct Boom: Error {}
        var ran = false
        let (a, b) = Parallel.both({ () throws -> Int in throw Boom() }, { ran = true; return 2 })
        XCTAssertThrowsError(try a.get())
        XCTAssertEqual(b, 2)
        XCTAssertTrue(ran)
        let (c, d) = Parallel.both({ 1 }, { "x" })
        XCTAssertEqual(try c.get(), 1)
        XCTAssertEqual(d, "x")
    }
}
