// The readable builder layer: statements that lower to the exact expression sequences
// `nft` emits for the equivalent text (checked against `nft --debug=netlink`).
//
//   NftRule(.match(.ipDaddr, .eq, .ipv4("172.30.0.41")), .l4protoIs(.tcp),
//           .match(.thDport, .eq, .port(80)), .verdict(.goto("svc-x")), comment: "ns/svc:http")

/// A group of expressions that together form one nft statement or match.
public struct NftStatement: Sendable, Hashable {
    public var exprs: [NftExpr]

    public init(_ exprs: [NftExpr]) { self.exprs = exprs }

    /// Escape hatch: raw expressions.
    public static func raw(_ exprs: [NftExpr]) -> NftStatement { NftStatement(exprs) }

    // MARK: matches

    /// `FIELD [op] VALUE`. For ct state/status (bit sets) `.eq` means "any of these bits"
    /// and `.neq` "none of them", as in nft (`ct state new,established`).
    public static func match(_ field: NftField, _ op: NftCmpOp = .eq, _ value: NftValue) -> NftStatement {
        var e = [NftExpr]()
        e.reserveCapacity(5)
        if let p = field.l4Dependency { e += [.meta(key: .l4proto, dreg: .r1), .cmp(op: .eq, sreg: .r1, data: [p.number])] }
        e.append(field.load(into: .r1))
        switch field.dataType {
        case .ctState, .ctStatus:
            let zero = NftBytes(zeros: value.bytes.count)
            e.append(.bitwise(sreg: .r1, dreg: .r1, mask: value.bytes, xor: zero))
            e.append(.cmp(op: op == .eq ? .neq : .eq, sreg: .r1, data: zero))
        default:
            e.append(.cmp(op: op, sreg: .r1, data: value.bytes))
        }
        return NftStatement(e)
    }

    /// `meta l4proto PROTO`
    public static func l4protoIs(_ p: NftL4Proto) -> NftStatement {
        match(.l4proto, .eq, .proto(p))
    }

    /// `ct state new[,…]`
    public static func ctState(_ s: NftCtState, _ op: NftCmpOp = .eq) -> NftStatement {
        match(.ctState, op, .ctState(s))
    }

    /// `ct status dnat[,…]`
    public static func ctStatus(_ s: NftCtStatus, _ op: NftCmpOp = .eq) -> NftStatement {
        match(.ctStatus, op, .ctStatus(s))
    }

    /// `fib daddr type local`
    public static func fibDaddrType(_ t: NftFibAddrType, _ op: NftCmpOp = .eq) -> NftStatement {
        match(.fibDaddrType, op, .fibAddrType(t))
    }

    /// `ip saddr [!=] 10.0.0.0/8`: a prefix match, lowered as nft does (a shorter load when
    /// the prefix ends on a byte boundary, otherwise load + bitwise mask + cmp).
    public static func matchPrefix(_ field: NftField, _ cidr: String, _ op: NftCmpOp = .eq) -> NftStatement {
        do { return try prefixStatement(field, try NftKeyPart.parsePrefix(cidr), op) } catch {
            preconditionFailure("\(error)")
        }
    }

    /// Throwing variant of `matchPrefix`.
    public static func prefixStatement(_ field: NftField, _ prefix: NftKeyPart, _ op: NftCmpOp = .eq) throws -> NftStatement {
        guard let loc = field.payloadLocation, let len = NftBits.prefixLength(start: prefix.start.bytes, end: prefix.end.bytes),
              prefix.start.bytes.count == Int(loc.len) else {
            throw NftModelError.invalidPrefix("\(field.text) \(prefix)")
        }
        let full = Int(loc.len)
        if len == full * 8 {
            return match(field, op, prefix.start)
        }
        if len % 8 == 0 {
            let n = len / 8
            precondition(n > 0, "a /0 prefix matches everything; leave the match out")
            return NftStatement([
                .payload(base: loc.base, offset: loc.offset, len: UInt32(n), dreg: .r1),
                .cmp(op: op, sreg: .r1, data: NftBytes(prefix.start.bytes.prefix(n))),
            ])
        }
        let mask = NftBits.prefixMask(bytes: full, len: len)
        return NftStatement([
            .payload(base: loc.base, offset: loc.offset, len: loc.len, dreg: .r1),
            .bitwise(sreg: .r1, dreg: .r1, mask: NftBytes(mask), xor: NftBytes(zeros: full)),
            .cmp(op: op, sreg: .r1, data: prefix.start.bytes),
        ])
    }

    /// `FIELD & MASK op VALUE` for 32-bit host-endian fields: `meta mark & 0x4000 == 0`.
    public static func matchBits(_ field: NftField, mask: UInt32, _ op: NftCmpOp, _ value: UInt32) -> NftStatement {
        NftStatement(dependency(of: [field]) + [
            field.load(into: .r1),
            .bitwise(sreg: .r1, dreg: .r1, mask: NftBytes(host: mask), xor: NftBytes(host: 0)),
            .cmp(op: op, sreg: .r1, data: NftBytes(host: value)),
        ])
    }

    // MARK: set and map lookups

    /// `K1 . K2 … [!=] @set`. `intervalConcat`: the set is a concatenation with `flags interval`
    /// (nft then converts host-endian fields to network order first).
    public static func lookup(_ key: [NftField], set: String, invert: Bool = false,
                              intervalConcat: Bool = false) -> NftStatement {
        NftStatement(loadConcat(key, intervalConcat: intervalConcat) + [.lookup(set: set, sreg: .r1, dreg: nil, invert: invert)])
    }

    /// Lookup in the given set (uses its flags to decide on byte order conversion).
    public static func lookup(_ key: [NftField], in set: NftSet, invert: Bool = false) -> NftStatement {
        lookup(key, set: set.name, invert: invert, intervalConcat: set.key.isConcat && set.flags.contains(.interval))
    }

    /// `K1 . K2 … vmap @map`
    public static func vmap(_ key: [NftField], map: String, intervalConcat: Bool = false) -> NftStatement {
        NftStatement(loadConcat(key, intervalConcat: intervalConcat) + [.lookup(set: map, sreg: .r1, dreg: .verdict, invert: false)])
    }

    // MARK: NAT

    /// `[meta l4proto P] dnat ip to K map @map` (or `dnat ip addr . port to …` — same bytecode):
    /// the map's data is `ipv4_addr . inet_service` (withPort) or just the address. A port
    /// mapping needs the protocol match in nft text, so `l4proto` is required with `withPort`.
    public static func dnatFromMap(_ key: [NftField], map: String, family: NftFamily,
                                   withPort: Bool, l4proto: NftL4Proto?, flags: NftNatFlags = []) -> NftStatement {
        precondition(!withPort || l4proto != nil, "a port mapping needs an l4proto match (nft requires it)")
        var e: [NftExpr] = []
        e.reserveCapacity(5)
        if let l4proto { e += match(.l4proto, .eq, .proto(l4proto)).exprs }
        e += loadConcat(key, intervalConcat: false)
        e.append(.lookup(set: map, sreg: .r1, dreg: .r1, invert: false))
        let addrWords = (family == .ip6 ? 16 : 4) / 4
        e.append(.nat(type: .dnat, family: family == .ip6 ? .ip6 : .ip, addrMin: .r1, addrMax: nil,
                      protoMin: withPort ? .at(slot: addrWords) : nil, protoMax: nil, flags: flags))
        return NftStatement(e)
    }

    /// `[meta l4proto P] dnat ip to ADDR[:PORT]`
    public static func dnat(to addr: NftValue, port: UInt16? = nil, l4proto: NftL4Proto? = nil,
                            flags: NftNatFlags = []) -> NftStatement {
        natImmediate(.dnat, addr, port, l4proto, flags)
    }

    /// `[meta l4proto P] snat ip to ADDR[:PORT]`
    public static func snat(to addr: NftValue, port: UInt16? = nil, l4proto: NftL4Proto? = nil,
                            flags: NftNatFlags = []) -> NftStatement {
        natImmediate(.snat, addr, port, l4proto, flags)
    }

    private static func natImmediate(_ type: NftNatType, _ addr: NftValue, _ port: UInt16?, _ l4proto: NftL4Proto?,
                                     _ flags: NftNatFlags) -> NftStatement {
        precondition(port == nil || l4proto != nil, "a port mapping needs an l4proto match (nft requires it)")
        var e: [NftExpr] = []
        e.reserveCapacity(5)
        if let l4proto { e += match(.l4proto, .eq, .proto(l4proto)).exprs }
        e.append(.immediateData(dreg: .r1, data: addr.bytes))
        var f = flags
        if let port {
            e.append(.immediateData(dreg: .r2, data: NftValue.port(port).bytes))
            f.insert(.protoSpecified)
        }
        e.append(.nat(type: type, family: addr.type == .ipv6Addr ? .ip6 : .ip, addrMin: .r1, addrMax: nil,
                      protoMin: port == nil ? nil : .r2, protoMax: nil, flags: f))
        return NftStatement(e)
    }

    /// `masquerade [fully-random]`
    public static func masquerade(fullyRandom: Bool = false) -> NftStatement {
        masquerade(flags: fullyRandom ? .fullyRandom : [])
    }

    public static func masquerade(flags: NftNatFlags) -> NftStatement {
        NftStatement([.masq(flags: flags, protoMin: nil, protoMax: nil)])
    }

    // MARK: meta / ct set

    /// What a mark statement does to the current value.
    public enum MarkUpdate: Sendable, Hashable {
        /// `mark set VALUE`
        case set(UInt32)
        /// `mark set mark or BITS`
        case or(UInt32)
        /// `mark set mark and BITS`
        case and(UInt32)
        /// `mark set mark xor BITS`
        case xor(UInt32)
        /// `mark set FIELD` (e.g. a numgen)
        case from(NftField)
    }

    /// `meta mark set …`
    public static func setMark(_ u: MarkUpdate) -> NftStatement {
        NftStatement(markExprs(load: NftField.mark.load(into: .r1), u) + [.metaSet(key: .mark, sreg: .r1)])
    }

    /// `ct mark set …`
    public static func setCtMark(_ u: MarkUpdate) -> NftStatement {
        NftStatement(markExprs(load: NftField.ctMark.load(into: .r1), u) + [.ctSet(key: .mark, sreg: .r1)])
    }

    private static func markExprs(load: NftExpr, _ u: MarkUpdate) -> [NftExpr] {
        func bw(_ mask: UInt32, _ xor: UInt32) -> [NftExpr] {
            [load, .bitwise(sreg: .r1, dreg: .r1, mask: NftBytes(host: mask), xor: NftBytes(host: xor))]
        }
        switch u {
        case .set(let v): return [.immediateData(dreg: .r1, data: NftBytes(host: v))]
        case .or(let v): return bw(~v, v)
        case .and(let v): return bw(v, 0)
        case .xor(let v): return bw(0xffff_ffff, v)
        case .from(let f): return dependency(of: [f]) + [f.load(into: .r1)]
        }
    }

    // MARK: dynamic set updates

    /// `update @set { K [timeout T] [: D] }` / `add @set { K }` from the packet path.
    public static func dynset(_ op: NftDynsetOp, set: String, key: [NftField], data: [NftField]? = nil,
                              timeoutMs: UInt64? = nil) -> NftStatement {
        var e = dependency(of: key + (data ?? []))
        var slot = 0
        for f in key {
            e.append(f.load(into: .at(slot: slot)))
            slot += f.registerWords
        }
        var dreg: NftRegister? = nil
        if let data {
            // nft starts the data on the next 128-bit boundary after the key.
            slot = (slot + 3) / 4 * 4
            dreg = .at(slot: slot)
            for f in data {
                e.append(f.load(into: .at(slot: slot)))
                slot += f.registerWords
            }
        }
        e.append(.dynset(op: op, set: set, sregKey: .r1, sregData: dreg, timeoutMs: timeoutMs))
        return NftStatement(e)
    }

    // MARK: terminal statements

    public static func verdict(_ v: NftVerdict) -> NftStatement { NftStatement([.verdict(v)]) }
    public static let accept = verdict(.accept)
    public static let drop = verdict(.drop)
    public static let `return` = verdict(.return)
    public static func jump(_ chain: String) -> NftStatement { verdict(.jump(chain)) }
    public static func goto(_ chain: String) -> NftStatement { verdict(.goto(chain)) }

    public static let counter = NftStatement([.counter])
    public static let notrack = NftStatement([.notrack])

    /// The kinds of reject nft can express.
    public enum RejectKind: Sendable, Hashable {
        /// `reject with icmp type port-unreachable` (ip)
        case icmpPortUnreachable
        /// `reject with icmpv6 type port-unreachable` (ip6)
        case icmpv6PortUnreachable
        /// `reject with icmpx type port-unreachable` (inet)
        case icmpxPortUnreachable
        /// `reject with icmp type <code>`
        case icmp(code: UInt8)
        /// `reject with icmpv6 type <code>`
        case icmpv6(code: UInt8)
        /// `meta l4proto tcp reject with tcp reset` (the protocol match is part of the statement, as nft emits it)
        case tcpReset
    }

    public static func reject(_ k: RejectKind) -> NftStatement {
        switch k {
        case .icmpPortUnreachable: return NftStatement([.reject(type: .icmpUnreach, code: 3)])
        case .icmpv6PortUnreachable: return NftStatement([.reject(type: .icmpUnreach, code: 4)])
        case .icmpxPortUnreachable: return NftStatement([.reject(type: .icmpxUnreach, code: 1)])
        case .icmp(let c), .icmpv6(let c): return NftStatement([.reject(type: .icmpUnreach, code: c)])
        case .tcpReset: return NftStatement(l4protoIs(.tcp).exprs + [.reject(type: .tcpReset, code: 0)])
        }
    }

    /// The default reject of a family (ICMP / ICMPv6 / ICMPx port unreachable).
    public static func reject(for family: NftFamily) -> NftStatement {
        switch family {
        case .ip: return reject(.icmpPortUnreachable)
        case .ip6: return reject(.icmpv6PortUnreachable)
        case .inet: return reject(.icmpxPortUnreachable)
        }
    }

    // MARK: helpers

    /// The l4proto matches nft inserts before protocol-specific fields (one per protocol).
    static func dependency(of fields: [NftField]) -> [NftExpr] {
        var seen: [NftL4Proto] = []
        for f in fields {
            if let p = f.l4Dependency, !seen.contains(p) { seen.append(p) }
        }
        return seen.flatMap { p -> [NftExpr] in
            [.meta(key: .l4proto, dreg: .r1), .cmp(op: .eq, sreg: .r1, data: [p.number])]
        }
    }

    /// Loads a concatenation into consecutive registers starting at reg 1.
    static func loadConcat(_ key: [NftField], intervalConcat: Bool) -> [NftExpr] {
        var e = dependency(of: key)
        var slot = 0
        for f in key {
            let reg = NftRegister.at(slot: slot)
            e.append(f.load(into: reg))
            if intervalConcat && key.count > 1 && f.isHostEndianLoad {
                let len = UInt32(f.dataType.byteLength)
                // nft: byteorder reg = hton(reg, size, len); a 1-byte value is converted as 2 bytes.
                e.append(.byteorder(sreg: reg, dreg: reg, op: .hton, len: len, size: len == 1 ? 2 : len))
            }
            slot += f.registerWords
        }
        return e
    }
}
