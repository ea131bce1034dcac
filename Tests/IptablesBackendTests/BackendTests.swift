import XCTest
import KubeModel
import KubePlan
@testable import IptablesBackend

final class BackendTests: XCTestCase {
    func testProbabilities() {
        let c = ProbabilityTable(upTo: 5)
        XCTAssertEqual(c.get(2), "0.5000000000")
        XCTAssertEqual(c.get(3), "0.3333333333")
        XCTAssertEqual(c.get(7), "0.1428571429")  // beyond the table: computed
        XCTAssertEqual(c.get(5), "0.2000000000")
    }

    func testLargeClusterModeDropsEndpointComments() throws {
        var cluster = Cluster()
        var svc = Service(ref: ObjectRef(kind: "Service", namespace: "ns", name: "big", file: "f"))
        svc.clusterIPs = [IPAddress("10.96.0.1")!]
        svc.ports = [ServicePort(name: "", proto: .tcp, port: 80)]
        cluster.services = [svc]
        var slice = EndpointSlice(ref: ObjectRef(kind: "EndpointSlice", namespace: "ns", name: "big-1", file: "f"), serviceName: "big", family: .ipv4)
        slice.ports = [EndpointPort(name: "", port: 80, proto: .tcp)]
        slice.endpoints = (0..<1001).map { Endpoint(address: IPAddress(v4: 0x0A00_0000 + UInt32($0))) }
        cluster.slices = [slice]
        let plan = Planner.plan(cluster: cluster, node: NodeConfig(nodeName: "n"), family: .ipv4)
        XCTAssertTrue(plan.largeClusterMode)
        let text = IptablesBackend.build(plan).render()
        XCTAssertFalse(text.contains("ns/big ->"))
        XCTAssertFalse(text.contains("-A KUBE-SEP-") && text.contains("--comment ns/big -s"))
        XCTAssertTrue(text.contains("-m statistic --mode random --probability 0.0009990010 -j KUBE-SEP-"))
    }

    func testRenderTenThousandServicesQuickly() throws {
        var cluster = Cluster()
        for i in 0..<10_000 {
            var svc = Service(ref: ObjectRef(kind: "Service", namespace: "ns\(i % 50)", name: "svc\(i)", file: "f"))
            svc.clusterIPs = [IPAddress(v4: 0x0A60_0000 + UInt32(i))]
            svc.ports = [ServicePort(name: "http", proto: .tcp, port: 80)]
            cluster.services.append(svc)
            var slice = EndpointSlice(ref: ObjectRef(kind: "EndpointSlice", namespace: svc.namespace, name: "svc\(i)-1", file: "f"),
                                      serviceName: svc.name, family: .ipv4)
            slice.ports = [EndpointPort(name: "http", port: 8080, proto: .tcp)]
            slice.endpoints = (0..<10).map { Endpoint(address: IPAddress(v4: 0x0AF4_0000 + UInt32(i * 10 + $0))) }
            cluster.slices.append(slice)
        }
        let start = Date()
        let plan = Planner.plan(cluster: cluster, node: NodeConfig(nodeName: "n"), family: .ipv4)
        let text = IptablesBackend.build(plan).render()
        let elapsed = Date().timeIntervalSince(start)
        XCTAssertGreaterThan(text.utf8.count, 10_000_000)
        print("plan+render of 10,000 services x 10 endpoints (debug build): \(String(format: "%.2f", elapsed)) s")
    }
}
