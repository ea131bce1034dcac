import XCTest
import NftModel

/// Builder lowering, checked against what `nft --debug=netlink` prints for the same text
/// (nft 1.0.6, captured on this machine; the kernel tests re-check the whole example live).
final class LoweringTests: XCTestCase {
    func lowered(_ s: NftStatement...) -> String {
        s.flatMap { $0.exprs }.map { $0.debugText }.joined(separator: "\n")
    }

    func testTcpDportNeedsL4protoFirst() {
        // tcp dport 80 drop
        XCTAssertEqual(lowered(.match(.tcpDport, .eq, .port(80)), .drop), """
        [ meta load l4proto => reg 1 ]
        [ cmp eq reg 1 0x00000006 ]
        [ payload load 2b @ transport header + 2 => reg 1 ]
        [ cmp eq reg 1 0x00005000 ]
        [ immediate reg 0 drop ]
        """)
    }

    func testPrefixes() {
        // ip saddr 10.0.0.0/8 (byte boundary: shorter load), /12 (mask), ip6 /56 and /60
        XCTAssertEqual(lowered(.matchPrefix(.ipSaddr, "10.0.0.0/8")), """
        [ payload load 1b @ network header + 12 => reg 1 ]
        [ cmp eq reg 1 0x0000000a ]
        """)
        XCTAssertEqual(lowered(.matchPrefix(.ipSaddr, "10.0.0.0/12")), """
        [ payload load 4b @ network header + 12 => reg 1 ]
        [ bitwise reg 1 = ( reg 1 & 0x0000f0ff ) ^ 0x00000000 ]
        [ cmp eq reg 1 0x0000000a ]
        """)
        XCTAssertEqual(lowered(.matchPrefix(.ipSaddr, "10.1.0.0/16", .neq)), """
        [ payload load 2b @ network header + 12 => reg 1 ]
        [ cmp neq reg 1 0x0000010a ]
        """)
        XCTAssertEqual(lowered(.matchPrefix(.ip6Saddr, "fd00::/56")), """
        [ payload load 7b @ network header + 8 => reg 1 ]
        [ cmp eq reg 1 0x000000fd 0x00000000 ]
        """)
        XCTAssertEqual(lowered(.matchPrefix(.ip6Saddr, "fd00::/60")), """
        [ payload load 16b @ network header + 8 => reg 1 ]
        [ bitwise reg 1 = ( reg 1 & 0xffffffff 0xf0ffffff 0x00000000 0x00000000 ) ^ 0x00000000 0x00000000 0x00000000 0x00000000 ]
        [ cmp eq reg 1 0x000000fd 0x00000000 0x00000000 0x00000000 ]
        """)
    }

    func testConcatenatedVmapUsesConsecutiveRegisters() {
        // ip daddr . meta l4proto . th dport vmap @service-ips
        XCTAssertEqual(lowered(.vmap([.ipDaddr, .l4proto, .thDport], map: "service-ips")), """
        [ payload load 4b @ network header + 16 => reg 1 ]
        [ meta load l4proto => reg 9 ]
        [ payload load 2b @ transport header + 2 => reg 10 ]
        [ lookup reg 1 set service-ips dreg 0 ]
        """)
        // five fields: the fifth word is the start of the second 128-bit register
        let e = NftStatement.lookup([.ipDaddr, .l4proto, .thDport, .ipSaddr, .mark], set: "s").exprs
        XCTAssertEqual(e[4], .meta(key: .mark, dreg: .r2))
    }

    func testIntervalConcatConvertsHostOrderFields() {
        // ip daddr . meta l4proto . th dport . ip saddr @src-ranges (flags interval)
        XCTAssertEqual(lowered(.lookup([.ipDaddr, .l4proto, .thDport, .ipSaddr], set: "src-ranges", intervalConcat: true)), """
        [ payload load 4b @ network header + 16 => reg 1 ]
        [ meta load l4proto => reg 9 ]
        [ byteorder reg 9 = hton(reg 9, 2, 1) ]
        [ payload load 2b @ transport header + 2 => reg 10 ]
        [ payload load 4b @ network header + 12 => reg 11 ]
        [ lookup reg 1 set src-ranges ]
        """)
    }

    func testMarks() {
        // meta mark set meta mark or 0x4000; meta mark & 0x4000 == 0 return; meta mark set meta mark xor 0x4000
        XCTAssertEqual(lowered(.setMark(.or(0x4000))), """
        [ meta load mark => reg 1 ]
        [ bitwise reg 1 = ( reg 1 & 0xffffbfff ) ^ 0x00004000 ]
        [ meta set mark with reg 1 ]
        """)
        XCTAssertEqual(lowered(.matchBits(.mark, mask: 0x4000, .eq, 0), .return), """
        [ meta load mark => reg 1 ]
        [ bitwise reg 1 = ( reg 1 & 0x00004000 ) ^ 0x00000000 ]
        [ cmp eq reg 1 0x00000000 ]
        [ immediate reg 0 return ]
        """)
        XCTAssertEqual(lowered(.setMark(.xor(0x4000))), """
        [ meta load mark => reg 1 ]
        [ bitwise reg 1 = ( reg 1 & 0xffffffff ) ^ 0x00004000 ]
        [ meta set mark with reg 1 ]
        """)
        XCTAssertEqual(lowered(.setMark(.from(.numgenRandom(mod: 10, offset: 5)))), """
        [ numgen reg 1 = random mod 10 offset 5 ]
        [ meta set mark with reg 1 ]
        """)
    }

    func testNatForms() {
        // meta l4proto tcp dnat ip to numgen random mod 3 map @eps-x
        XCTAssertEqual(lowered(.dnatFromMap([.numgenRandom(mod: 3)], map: "eps-x", family: .ip, withPort: true, l4proto: .tcp)), """
        [ meta load l4proto => reg 1 ]
        [ cmp eq reg 1 0x00000006 ]
        [ numgen reg 1 = random mod 3 ]
        [ lookup reg 1 set eps-x dreg 1 ]
        [ nat dnat ip addr_min reg 1 proto_min reg 9 ]
        """)
        // meta l4proto tcp dnat ip to 10.0.0.1:8080
        XCTAssertEqual(lowered(.dnat(to: .ipv4("10.0.0.1"), port: 8080, l4proto: .tcp)), """
        [ meta load l4proto => reg 1 ]
        [ cmp eq reg 1 0x00000006 ]
        [ immediate reg 1 0x0100000a ]
        [ immediate reg 2 0x0000901f ]
        [ nat dnat ip addr_min reg 1 proto_min reg 2 flags 0x2 ]
        """)
        XCTAssertEqual(lowered(.dnat(to: .ipv4("10.0.0.1"))), """
        [ immediate reg 1 0x0100000a ]
        [ nat dnat ip addr_min reg 1 ]
        """)
        XCTAssertEqual(lowered(.masquerade(fullyRandom: true)), "[ masq flags 0x10 ]")
    }

    func testCtFibRejectDynset() {
        XCTAssertEqual(lowered(.ctState([.established, .related]), .accept), """
        [ ct load state => reg 1 ]
        [ bitwise reg 1 = ( reg 1 & 0x00000006 ) ^ 0x00000000 ]
        [ cmp neq reg 1 0x00000000 ]
        [ immediate reg 0 accept ]
        """)
        XCTAssertEqual(lowered(.fibDaddrType(.local)), """
        [ fib daddr type => reg 1 ]
        [ cmp eq reg 1 0x00000002 ]
        """)
        XCTAssertEqual(lowered(.reject(.tcpReset)), """
        [ meta load l4proto => reg 1 ]
        [ cmp eq reg 1 0x00000006 ]
        [ reject type 1 code 0 ]
        """)
        XCTAssertEqual(lowered(.reject(for: .ip)), "[ reject type 0 code 3 ]")
        XCTAssertEqual(lowered(.reject(for: .ip6)), "[ reject type 0 code 4 ]")
        XCTAssertEqual(lowered(.reject(for: .inet)), "[ reject type 2 code 1 ]")
        XCTAssertEqual(lowered(.dynset(.update, set: "aff-x", key: [.ipSaddr], timeoutMs: 10_800_000)), """
        [ payload load 4b @ network header + 12 => reg 1 ]
        [ dynset update reg_key 1 set aff-x timeout 10800000ms ]
        """)
        XCTAssertEqual(lowered(.match(.iifname, .eq, .ifname("eth0"))), """
        [ meta load iifname => reg 1 ]
        [ cmp eq reg 1 0x30687465 0x00000000 0x00000000 0x00000000 ]
        """)
    }
}

final class GoldenRenderTests: XCTestCase {
    func testSmallRulesetGolden() throws {
        var t = NftTable(family: .ip, name: "kuberules")
        t.add(NftSet.vmap("service-ips", .types([.ipv4Addr, .inetProto, .inetService]), comment: "dispatch", elements: [
            .verdict([.ipv4("172.30.0.41"), .proto(.tcp), .port(80)], .goto("svc-x"), comment: "ns/svc:http"),
        ]))
        t.add(NftSet.map("eps-x", .typeof([.numgenRandom(mod: 2)]), .typeof([.ipDaddr, .tcpDport]), elements: [
            .mapping([.integer(1)], to: [.ipv4("10.0.0.2"), .port(8080)]),
            .mapping([.integer(0)], to: [.ipv4("10.0.0.1"), .port(8080)]),
        ]))
        t.add(NftSet.set("src", .types([.ipv4Addr]), flags: .interval, elements: [
            .interval([.prefix("10.0.0.0/8")]), .interval([.range(.ipv4("192.168.0.1"), .ipv4("192.168.0.9"))]),
        ]))
        t.add(NftSet.set("aff-x", .types([.ipv4Addr]), flags: [.dynamic, .timeout], timeoutMs: 10_800_000))
        t.add(.base("prerouting", type: .nat, hook: .prerouting, priority: -100, rules: [
            NftRule(.vmap([.ipDaddr, .l4proto, .thDport], map: "service-ips")),
        ]))
        t.add(NftChain(name: "svc-x", comment: "ns/svc:http", rules: [
            NftRule(.lookup([.ipSaddr], set: "src", invert: true), .setMark(.or(0x4000)), comment: "masquerade"),
            NftRule(.dynset(.update, set: "aff-x", key: [.ipSaddr], timeoutMs: 10_800_000)),
            NftRule(.dnatFromMap([.numgenRandom(mod: 2)], map: "eps-x", family: .ip, withPort: true, l4proto: .tcp)),
        ]))
        let text = try NftRuleset(tables: [t]).renderChecked()
        XCTAssertEqual(text, """
        table ip kuberules {
        \tmap eps-x {
        \t\ttypeof numgen random mod 2 : ip daddr . tcp dport
        \t}
        \tmap service-ips {
        \t\ttype ipv4_addr . inet_proto . inet_service : verdict
        \t\tcomment "dispatch"
        \t}
        \tset src {
        \t\ttype ipv4_addr
        \t\tflags interval
        \t}
        \tset aff-x {
        \t\ttype ipv4_addr
        \t\tflags dynamic,timeout
        \t\ttimeout 3h
        \t}
        \tchain prerouting {
        \t\ttype nat hook prerouting priority -100; policy accept;
        \t}
        \tchain svc-x {
        \t\tcomment "ns/svc:http"
        \t}
        }
        add element ip kuberules eps-x {
        \t0 : 10.0.0.1 . 8080,
        \t1 : 10.0.0.2 . 8080
        }
        add element ip kuberules service-ips {
        \t172.30.0.41 . tcp . 80 comment "ns/svc:http" : goto svc-x
        }
        add element ip kuberules src {
        \t10.0.0.0/8,
        \t192.168.0.1-192.168.0.9
        }
        table ip kuberules {
        \tchain prerouting {
        \t\tip daddr . meta l4proto . th dport vmap @service-ips
        \t}
        \tchain svc-x {
        \t\tip saddr != @src meta mark set meta mark or 0x00004000 comment "masquerade"
        \t\tupdate @aff-x { ip saddr timeout 3h }
        \t\tmeta l4proto tcp dnat ip to numgen random mod 2 map @eps-x
        \t}
        }

        """)
        XCTAssertTrue(NftRuleset(tables: [t]).renderReplacing().hasPrefix("table ip kuberules\ndelete table ip kuberules\ntable ip kuberules {\n"))
    }

    func testUnrenderableRuleIsReported() {
        let t = NftTable(family: .ip, name: "k", chains: [NftChain(name: "c", rules: [
            NftRule([.payload(base: .network, offset: 0, len: 1, dreg: .r1), .cmp(op: .eq, sreg: .r1, data: [0x45])]),
        ])])
        XCTAssertThrowsError(try NftRuleset(tables: [t]).renderChecked())
        XCTAssertTrue(NftRuleset(tables: [t]).render().contains("# kuberules: ip k chain c rule #0 cannot be written as nft text"))
    }

    func testAddressFormatting() {
        XCTAssertEqual(NftValue.ipv6("fd00::1").text, "fd00::1")
        XCTAssertEqual(NftValue.ipv6("2001:db8:0:0:1:0:0:1").text, "2001:db8::1:0:0:1")
        XCTAssertEqual(NftValue.ipv6("::").text, "::")
        XCTAssertEqual(NftValue.ipv6("::ffff:10.0.0.1").text, "::ffff:10.0.0.1")
        XCTAssertNil(NftAddress.parseIPv6("1::2::3"))
        XCTAssertNil(NftAddress.parseIPv4("1.2.3"))
        XCTAssertThrowsError(try NftValue.parse("300.1.1.1", as: .ipv4Addr))
        XCTAssertEqual(NftFormat.duration(ms: 10_800_000), "3h")
        XCTAssertEqual(NftFormat.duration(ms: 90_500), "1m30s500ms")
    }
}
