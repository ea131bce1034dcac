import Foundation
import XCTest

/// Real packets through the rules of both backends (see datapath/run.sh): pod → ClusterIP
/// spreads over both endpoints keeping the pod source, hairpin is masqueraded, UDP answers,
/// NodePort answers, a service without endpoints is refused at once.
final class DataPathTests: XCTestCase {
    func run(_ mode: String) throws -> [String] {
        guard TestSupport.isRoot else { throw XCTSkip("needs root to create network namespaces (CI runs as root)") }
        guard TestSupport.which("ip") != nil, TestSupport.which("python3") != nil else { throw XCTSkip("needs iproute2 and python3") }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("datapath/run.sh").path
        guard let unshare = TestSupport.which("unshare") else { throw XCTSkip("unshare not installed") }
        // The script itself also runs in a throwaway namespace: not even a veth is created in ours.
        let r = try TestSupport.run(unshare, ["-n", "/bin/bash", script, TestSupport.binary.path, mode])
        XCTAssertEqual(r.status, 0, r.stderr)
        return r.stdout.split(separator: "\n").map(String.init)
    }

    func check(_ lines: [String], mode: String) {
        let cluster = lines.filter { $0.hasPrefix("clusterip ") }
        XCTAssertEqual(cluster.count, 12, "\(lines)")
        XCTAssertTrue(cluster.contains("clusterip pod2 10.244.0.2"), "\(mode): pod2 must see pod1's own source: \(cluster)")
        XCTAssertTrue(cluster.contains("clusterip pod1 10.244.0.1"), "\(mode): hairpin must be masqueraded to the node: \(cluster)")
        XCTAssertTrue(cluster.allSatisfy { $0 == "clusterip pod2 10.244.0.2" || $0 == "clusterip pod1 10.244.0.1" }, "\(mode): \(cluster)")
        XCTAssertTrue(lines.contains { $0.hasPrefix("udp pod") }, "\(mode): \(lines)")
        XCTAssertTrue(lines.contains { $0.hasPrefix("nodeport pod") }, "\(mode): \(lines)")
        XCTAssertTrue(lines.contains("noendpoints ConnectionRefusedError"), "\(mode): \(lines)")
    }

    func testNftables() throws {
        let lines = try run("nft")
        check(lines, mode: "nftables")
        XCTAssertTrue(lines.contains("unknownport ConnectionRefusedError"), "\(lines)")
    }

    func testIptables() throws {
        check(try run("ipt"), mode: "iptables")
    }
}
