import Foundation
import XCTest

/// Real packets through the rules `kuberules apply` installs, for nftables and iptables (see
/// datapath/run.sh for the namespaces: an external client with two sources, a node, three pods).
final class DataPathTests: XCTestCase {
    typealias Flows = [String: [String: Int]]

    func run(_ mode: String, script name: String = "run.sh") throws -> Flows {
        guard TestSupport.isRoot else { throw XCTSkip("needs root to create network namespaces (CI runs as root)") }
        guard TestSupport.which("ip") != nil, TestSupport.which("python3") != nil else { throw XCTSkip("needs iproute2 and python3") }
        guard let unshare = TestSupport.which("unshare") else { throw XCTSkip("unshare not installed") }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("datapath/" + name).path
        // The script itself also runs in a throwaway namespace: not even a veth is created in ours.
        let r = try TestSupport.run(unshare, ["-n", "/bin/bash", script, TestSupport.binary.path] + (mode.isEmpty ? [] : [mode]))
        XCTAssertEqual(r.status, 0, r.stderr)
        var flows = Flows()
        for line in r.stdout.split(separator: "\n") {
            let words = line.split(separator: " ").map(String.init)
            if words.first == "LEFT" { flows["LEFT"] = [words[1]: 1]; continue }
            guard words.count >= 2, words[0] == "FLOW" else { continue }
            var answers = [String: Int]()
            for token in words.dropFirst(2) {
                let kv = token.split(separator: "=")
                answers[String(kv[0])] = Int(kv[1]) ?? 0
            }
            flows[words[1]] = answers
        }
        return flows
    }

    func check(_ f: Flows, _ mode: String) {
        func only(_ flow: String, _ answers: [String: Int], _ why: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertEqual(f[flow], answers, "\(mode) \(flow): \(why)", file: file, line: line)
        }
        // Pod -> ClusterIP: spread over the three endpoints (90 connections, 1/3 each: each gets
        // at least 12 except with probability < 1e-4), the pod's source kept; hairpin masqueraded.
        let spread = f["pod-clusterip"] ?? [:]
        XCTAssertEqual(Set(spread.keys), ["pod1@10.244.0.1", "pod2@10.244.0.2", "pod3@10.244.0.2"],
                       "\(mode): pod -> ClusterIP must reach every endpoint, keep the pod source, masquerade the hairpin: \(spread)")
        XCTAssertEqual(spread.values.reduce(0, +), 90)
        for (k, n) in spread { XCTAssertGreaterThanOrEqual(n, 12, "\(mode): \(k) got \(n) of 90: \(spread)") }
        XCTAssertEqual(f["pod-udp"]?.values.reduce(0, +), 3)
        XCTAssertTrue(f["pod-udp"]?.keys.allSatisfy { $0.hasPrefix("pod") } ?? false, "\(mode) UDP: \(f["pod-udp"] ?? [:])")
        // Off-cluster client: ClusterIP, NodePort (eTP=Cluster) and externalIP answer, masqueraded to the node.
        for flow in ["client-clusterip", "client-nodeport", "client-externalip"] {
            let a = f[flow] ?? [:]
            XCTAssertFalse(a.isEmpty, "\(mode) \(flow)")
            XCTAssertTrue(a.keys.allSatisfy { ["pod1@10.244.0.1", "pod2@10.244.0.1", "pod3@10.244.1.1"].contains($0) },
                          "\(mode) \(flow): must be answered by an endpoint and masqueraded: \(a)")
        }
        // eTP=Local: only the local endpoint, client source kept; LB source ranges let .100 in and drop .101.
        only("client-local-nodeport", ["pod1@192.168.50.100": 12], "eTP=Local reaches only local endpoints and keeps the source")
        only("client-lb-allowed", ["pod1@192.168.50.100": 6], "the allowed source reaches the LB IP")
        if mode.hasPrefix("nftables") {
            only("records-client-local", ["entries": 1], "eTP=Local with affinity records the client once, under the local chain's key")
        }
        only("client-lb-blocked", ["TimeoutError": 2], "a source outside loadBalancerSourceRanges is dropped")
        only("pod-noendpoints", ["ConnectionRefusedError": 3], "no endpoints: REJECT at once, not a timeout")
        if mode.hasPrefix("nftables") {  // kube-proxy's iptables mode has no such rule; its nftables mode does
            only("pod-unknownport", ["ConnectionRefusedError": 2], "an unknown port of a ClusterIP is refused")
        }
        XCTAssertEqual(f["pod-affinity"]?.count, 1, "\(mode): ClientIP affinity must stick to one endpoint: \(f["pod-affinity"] ?? [:])")
        XCTAssertEqual(f["pod-affinity"]?.values.reduce(0, +), 12, "\(mode): \(f["pod-affinity"] ?? [:])")
        // From the node itself (the output path).
        XCTAssertEqual(f["node-affinity"]?.count, 1, "\(mode): ClientIP affinity must stick from the node too: \(f["node-affinity"] ?? [:])")
        XCTAssertEqual(f["node-affinity"]?.values.reduce(0, +), 12, "\(mode): \(f["node-affinity"] ?? [:])")
        // The endpoint change leaves only pod3: a client pinned to pod1 or pod2 (both still up)
        // must not be sent there any more.
        let changed = f["pod-affinity-changed"] ?? [:]
        XCTAssertEqual(changed.values.reduce(0, +), 6, "\(mode): \(changed)")
        XCTAssertTrue(changed.keys.allSatisfy { $0.hasPrefix("pod3@") }, "\(mode): after an endpoint change affinity must not keep a removed endpoint: \(changed)")
        if mode == "nftables" || mode == "nftables (4 shards)" {
            // The affinity map full: a new client is not recorded but still DNATed.
            let full = f["client-affinity-full"] ?? [:]
            XCTAssertEqual(full.values.reduce(0, +), 6, "\(mode): \(full)")
            XCTAssertTrue(full.keys.allSatisfy { $0.hasPrefix("pod") }, "\(mode): a client the full affinity map cannot record must still reach an endpoint: \(full)")
        }
        only("pod-after-change", ["pod2@10.244.0.2": 12], "after the endpoint change only the new endpoint set answers")
        XCTAssertEqual(f["LEFT"], ["0": 1], "\(mode): cleanup must leave none of our rules")
        XCTAssertFalse(f["after-cleanup"]?.keys.contains { $0.hasPrefix("pod") } ?? true, "\(mode): the ClusterIP still answers after cleanup")
    }

    func testNftables() throws {
        check(try run("nft"), "nftables")
    }

    /// The same flows with service dispatch split over 4 shard tables, applied with a state
    /// directory (the change is planned from fingerprints and saved digests).
    func testNftablesSharded() throws {
        check(try run("nft-sharded"), "nftables (4 shards)")
    }

    /// The same flows in one table beside a service with 9,000 endpoints: the hairpin set is
    /// split by the address's last byte (`ip daddr & 0.0.0.3 vmap @hairpin-sets`), applied
    /// with a state directory (the change is planned from object fingerprints).
    func testNftablesLarge() throws {
        check(try run("nft-large"), "nftables (9,000 more endpoints)")
    }

    /// ClientIP affinity in IPv6 (datapath/run6.sh): the record rule that nft 1.0.6 cannot load
    /// from text works as applied over netlink. An external client and the node each stick to
    /// one pod, a plain service beside it still spreads, and each client is recorded once.
    func testNftablesIPv6Affinity() throws {
        let f = try run("", script: "run6.sh")
        for flow in ["client-affinity6", "node-affinity6"] {
            XCTAssertEqual(f[flow]?.count, 1, "\(flow): ClientIP affinity must stick to one endpoint: \(f[flow] ?? [:])")
            XCTAssertEqual(f[flow]?.values.reduce(0, +), 12, "\(flow): \(f[flow] ?? [:])")
            XCTAssertTrue(f[flow]?.keys.allSatisfy { $0.hasPrefix("pod") } ?? false, "\(flow): \(f[flow] ?? [:])")
        }
        XCTAssertEqual(f["client-plain6"]?.count, 2, "without affinity both pods answer: \(f["client-plain6"] ?? [:])")
        XCTAssertEqual(f["client-plain6"]?.values.reduce(0, +), 30)
        XCTAssertEqual(f["records6"], ["entries": 2], "one entry per client")
        XCTAssertEqual(f["LEFT"], ["0": 1], "cleanup must leave none of our rules")
    }

    func testIptables() throws {
        check(try run("ipt"), "iptables")
    }
}
