import Parallel

// Text: an `nft -f` script for a ruleset, and the decompiler that turns a rule's expressions
// back into nft syntax (so the text is derived from exactly the values sent over netlink).

public enum NftText {
    /// A chain/set/table name as nft accepts it: bare when it is an identifier, quoted otherwise.
    public static func name(_ s: String) -> String {
        guard let first = s.unicodeScalars.first, first.properties.isAlphabetic || first == "_" else {
            return NftFormat.quoted(s)
        }
        for c in s.unicodeScalars {
            let ok = (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9")
                || c == "/" || c == "-" || c == "_" || c == "."
            if !ok { return NftFormat.quoted(s) }
        }
        return s
    }
}

extension NftRuleset {
    /// The `nft -f` script that creates this ruleset in an empty namespace. Order: each table
    /// (by family, name) with its sets/maps (by name) and chains (by name), then elements,
    /// then rules (in chain order). Rules that cannot be written as nft text are emitted as
    /// `# kuberules: …` comment lines (see `renderChecked()`).
    public func render() -> String {
        (try? renderInternal(strict: false)) ?? ""
    }

    /// Like `render()`, but throws if a rule cannot be expressed as nft text.
    public func renderChecked() throws -> String {
        try renderInternal(strict: true)
    }

    /// A script that replaces the tables atomically: each table is created if missing, then
    /// deleted, then recreated (`destroy` needs kernel 6.3+; add+delete works everywhere).
    public func renderReplacing() -> String {
        var out = ""
        for t in sortedTables {
            out += "table \(t.family.rawValue) \(NftText.name(t.name))\n"
            out += "delete table \(t.family.rawValue) \(NftText.name(t.name))\n"
        }
        return out + render()
    }

    private func renderInternal(strict: Bool) throws -> String {
        var out = ""
        out.reserveCapacity(4096)
        for t in sortedTables {
            try t.render(into: &out, strict: strict)
        }
        return out
    }
}

extension NftTable {
    func render(into out: inout String, strict: Bool) throws {
        let fam = family.rawValue
        let tname = NftText.name(name)
        out += "table \(fam) \(tname) {\n"
        if let comment { out += "\tcomment \(NftFormat.quoted(comment))\n" }
        let sets = sortedSets
        let chains = sortedChains
        for s in sets {
            out += "\t\(s.isMap ? "map" : "set") \(NftText.name(s.name)) {\n"
            out += "\t\t\(s.key.text)"
            if let d = s.data {
                switch d {
                case .verdict: out += " : verdict"
                case .values(let spec): out += " : " + spec.bareText
                }
            }
            out += "\n"
            let words = s.flags.words
            if !words.isEmpty { out += "\t\tflags \(words.joined(separator: ","))\n" }
            if let t = s.timeoutMs { out += "\t\ttimeout \(NftFormat.duration(ms: t))\n" }
            if let size = s.size { out += "\t\tsize \(size)\n" }
            if let c = s.comment { out += "\t\tcomment \(NftFormat.quoted(c))\n" }
            out += "\t}\n"
        }
        for c in chains {
            out += "\tchain \(NftText.name(c.name)) {\n"
            if let b = c.base {
                out += "\t\ttype \(b.type.rawValue) hook \(b.hook.rawValue) priority \(b.priority); policy \(b.policy.rawValue);\n"
            }
            if let cm = c.comment { out += "\t\tcomment \(NftFormat.quoted(cm))\n" }
            out += "\t}\n"
        }
        out += "}\n"
        for s in sets where !s.elements.isEmpty {
            // Chunks keep lines (and nft's per-command work) bounded.
            let sorted = s.elements.sorted { $0.key < $1.key }
            var i = 0
            while i < sorted.count {
                let end = min(i + 1000, sorted.count)
                out += "add element \(fam) \(tname) \(NftText.name(s.name)) {\n"
                for j in i..<end {
                    out += "\t" + sorted[j].text(in: s) + (j + 1 < end ? ",\n" : "\n")
                }
                out += "}\n"
                i = end
            }
        }
        let setsByName = Dictionary(sets.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let withRules = chains.filter { !$0.rules.isEmpty }
        if !withRules.isEmpty {
            out += "table \(fam) \(tname) {\n"
            // Chains print independently: on every core, joined in order.
            let texts = try Parallel.map(count: withRules.count, minimumPerTask: 256) { (k: Int) throws(NftModelError) -> String in
                let c = withRules[k]
                var out = "\tchain \(NftText.name(c.name)) {\n"
                for (i, r) in c.rules.enumerated() {
                    do {
                        out += "\t\t" + (try r.text(family: family, sets: setsByName)) + "\n"
                    } catch {
                        let reason = (error as? NftDecompileError)?.reason ?? "\(error)"
                        let err = NftModelError.unrenderable(table: "\(fam) \(name)", chain: c.name, rule: i, reason: reason)
                        if strict { throw err }
                        out += "\t\t# kuberules: \(err.description)\n"
                    }
                }
                out += "\t}\n"
                return out
            }
            for t in texts { out += t }
            out += "}\n"
        }
    }
}

extension NftElement {
    /// nft text of the element in `set` (key [timeout] [comment] [: data]).
    public func text(in set: NftSet) -> String {
        let types = set.key.fieldTypes
        var parts: [String] = []
        parts.reserveCapacity(key.start.count)
        for i in 0..<key.start.count {
            let a = key.start[i]
            let ty = i < types.count ? types[i] : a.type
            if let end = key.end, i < end.count, end[i] != a {
                let b = end[i]
                if (ty == .ipv4Addr || ty == .ipv6Addr), let len = NftBits.prefixLength(start: a.bytes, end: b.bytes) {
                    parts.append(NftFormat.value(a.bytes, type: ty) + "/\(len)")
                } else {
                    parts.append(NftFormat.value(a.bytes, type: ty) + "-" + NftFormat.value(b.bytes, type: ty))
                }
            } else {
                parts.append(NftFormat.value(a.bytes, type: ty))
            }
        }
        var s = parts.joined(separator: " . ")
        if let t = timeoutMs { s += " timeout \(NftFormat.duration(ms: t))" }
        if let c = comment { s += " comment \(NftFormat.quoted(c))" }
        if let d = data {
            switch d {
            case .verdict(let v): s += " : \(v)"
            case .values(let vs):
                let dtypes = set.data?.fieldTypes ?? []
                s += " : " + vs.enumerated().map { i, v in
                    NftFormat.value(v.bytes, type: i < dtypes.count ? dtypes[i] : v.type)
                }.joined(separator: " . ")
            }
        }
        return s
    }
}

struct NftDecompileError: Error {
    var reason: String
}

extension NftRule {
    /// The nft text of this rule. Throws when the expression sequence has no nft syntax
    /// (the caller's sets are needed to split concatenations).
    public func renderText(family: NftFamily, sets: [NftSet]) throws -> String {
        do {
            return try text(family: family, sets: Dictionary(sets.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a }))
        } catch let e as NftDecompileError {
            throw NftModelError.unrenderable(table: family.rawValue, chain: "?", rule: 0, reason: e.reason)
        }
    }

    /// The same, with the sets already indexed by name (build the index once per table, not per rule).
    public func renderText(family: NftFamily, setsByName: [String: NftSet]) throws -> String {
        do {
            return try text(family: family, sets: setsByName)
        } catch let e as NftDecompileError {
            throw NftModelError.unrenderable(table: family.rawValue, chain: "?", rule: 0, reason: e.reason)
        }
    }

    func text(family: NftFamily, sets: [String: NftSet]) throws -> String {
        var d = Decompiler(family: family, sets: sets)
        for e in exprs { try d.add(e) }
        var s = d.out.joined(separator: " ")
        if let comment { s += (s.isEmpty ? "" : " ") + "comment \(NftFormat.quoted(comment))" }
        return s
    }
}

/// Symbolic register contents while decompiling a rule.
private enum Sym {
    case field(NftField)
    /// A payload load of the first `bytes` bytes of an address field (prefix match).
    case partial(NftField, bytes: Int)
    case masked(NftField, mask: [UInt8], xor: [UInt8])
    case data([UInt8])
    /// The result of a data-map lookup: key text, map name, data field types; `part` is the
    /// index of the data field this register holds.
    case mapped(key: String, map: String, types: [NftDataType], part: Int)
}

private struct Decompiler {
    let family: NftFamily
    let sets: [String: NftSet]
    var regs: [Int: Sym] = [:]
    var out: [String] = []
    /// The network protocol implied so far (for inet tables): set by `meta nfproto`.
    var netFamily: NftFamily

    init(family: NftFamily, sets: [String: NftSet]) {
        self.family = family
        self.sets = sets
        self.netFamily = family
    }

    func fail(_ r: String) -> NftDecompileError { NftDecompileError(reason: r) }

    func slot(_ r: NftRegister) throws -> Int {
        guard let s = r.slot else { throw fail("unexpected verdict register") }
        return s
    }

    mutating func put(_ r: NftRegister, _ sym: Sym, words: Int = 1) throws {
        let s = try slot(r)
        for i in 0..<max(1, words) { regs.removeValue(forKey: s + i) }
        regs[s] = sym
    }

    func sym(_ r: NftRegister) throws -> Sym {
        guard let v = regs[try slot(r)] else { throw fail("\(r) read before it was written") }
        return v
    }

    func payloadField(_ base: NftPayloadBase, _ offset: UInt32, _ len: UInt32) -> Sym? {
        let candidates: [NftField]
        switch (base, netFamily) {
        case (.network, .ip6): candidates = [.ip6Saddr, .ip6Daddr, .ip6Nexthdr]
        case (.network, _): candidates = [.ipSaddr, .ipDaddr, .ipProtocol]
        case (.transport, _): candidates = [.thSport, .thDport]
        default: candidates = []
        }
        for f in candidates {
            guard let loc = f.payloadLocation else { continue }
            if loc.offset == offset && loc.len == len { return .field(f) }
            if loc.offset == offset && len < loc.len && (f.dataType == .ipv4Addr || f.dataType == .ipv6Addr) {
                return .partial(f, bytes: Int(len))
            }
        }
        return nil
    }

    /// Text of the concatenation starting at `reg` with the given field types.
    func concatText(_ reg: NftRegister, types: [NftDataType]) throws -> String {
        var s = try slot(reg)
        var parts: [String] = []
        for t in types {
            guard let v = regs[s] else { throw fail("concatenation register \(NftRegister.at(slot: s)) not loaded") }
            if case .data(let d) = v {
                // A constant in a typed position (map data): print it as its type does.
                parts.append(NftValue(type: t, bytes: Array(d.prefix(t.byteLength))).text)
            } else {
                parts.append(try valueText(v))
            }
            s += max(1, t.paddedLength / 4)
        }
        return parts.joined(separator: " . ")
    }

    /// Text of a register used as a value source.
    func valueText(_ v: Sym) throws -> String {
        switch v {
        case .field(let f): return f.text
        case .data(let d): return NftFormat.hexBytes(d)
        case .mapped(let k, let m, _, let part):
            guard part == 0 else { throw fail("part of a map result used on its own") }
            return "\(k) map @\(NftText.name(m))"
        case .partial: throw fail("partial payload load used as a value")
        case .masked(let f, let mask, let xor):
            guard mask.count == 4 else { throw fail("bitwise on a non-32-bit value") }
            let m = NftValue.hostUInt32(mask), x = NftValue.hostUInt32(xor)
            if x == 0 { return "\(f.text) and \(NftFormat.hex32(m))" }
            if m == 0xffff_ffff { return "\(f.text) xor \(NftFormat.hex32(x))" }
            if m == ~x { return "\(f.text) or \(NftFormat.hex32(x))" }
            throw fail("bitwise and+xor combination")
        }
    }

    func setNamed(_ n: String) throws -> NftSet {
        guard let s = sets[n] else { throw fail("set @\(n) is not in this table") }
        return s
    }

    mutating func add(_ e: NftExpr) throws {
        switch e {
        case .payload(let base, let off, let len, let dreg):
            guard let f = payloadField(base, off, len) else {
                throw fail("payload \(base.text)+\(off)/\(len) has no field name")
            }
            try put(dreg, f, words: Int(len + 3) / 4)
        case .meta(let k, let dreg):
            try put(dreg, .field(.meta(k)), words: k.dataType.paddedLength / 4)
        case .ct(let k, let dreg, let dir):
            try put(dreg, .field(.ct(k, dir)), words: k.dataType.paddedLength / 4)
        case .numgen(let dreg, let m, let t, let o):
            try put(dreg, .field(.numgen(t, modulus: m, offset: o)))
        case .fib(let f, let r, let dreg):
            try put(dreg, .field(.fib(f, r)))
        case .immediateData(let dreg, let d):
            try put(dreg, .data(d), words: (d.count + 3) / 4)
        case .byteorder(let s, let d, _, _, _):
            // Only part of concatenated interval lookups, which regenerate it.
            guard s == d else { throw fail("byteorder between registers") }
        case .bitwise(let s, let d, let mask, let xor):
            guard case .field(let f) = try sym(s) else { throw fail("bitwise on a computed value") }
            try put(d, .masked(f, mask: mask, xor: xor), words: (mask.count + 3) / 4)
        case .cmp(let op, let sreg, let data):
            try cmp(op, try sym(sreg), data)
        case .lookup(let setName, let sreg, let dreg, let invert):
            let set = try setNamed(setName)
            let key = try concatText(sreg, types: set.key.fieldTypes)
            let ref = "@" + NftText.name(setName)
            if let dreg {
                if dreg == .verdict {
                    guard !invert else { throw fail("inverted vmap") }
                    out.append("\(key) vmap \(ref)")
                } else {
                    guard case .values(let spec)? = set.data else { throw fail("map lookup in a set") }
                    var s = try slot(dreg)
                    for (i, t) in spec.fieldTypes.enumerated() {
                        regs[s] = .mapped(key: key, map: setName, types: spec.fieldTypes, part: i)
                        s += max(1, t.paddedLength / 4)
                    }
                }
            } else {
                out.append(invert ? "\(key) != \(ref)" : "\(key) \(ref)")
            }
        case .verdict(let v):
            out.append(v.description)
        case .counter:
            out.append("counter")
        case .notrack:
            out.append("notrack")
        case .metaSet(let k, let sreg):
            out.append("meta \(k.name) set \(try valueText(try sym(sreg)))")
        case .ctSet(let k, let sreg):
            out.append("ct \(k.name) set \(try valueText(try sym(sreg)))")
        case .masq(let flags, let pmin, let pmax):
            guard pmin == nil, pmax == nil else { throw fail("masquerade to a port range") }
            let words = flags.words
            guard flags.subtracting([.random, .fullyRandom, .persistent]).isEmpty else {
                throw fail("masquerade flags 0x\(String(flags.rawValue, radix: 16))")
            }
            out.append(words.isEmpty ? "masquerade" : "masquerade " + words.joined(separator: ","))
        case .nat(let type, let fam, let amin, let amax, let pmin, let pmax, let flags):
            try nat(type, fam, amin, amax, pmin, pmax, flags)
        case .dynset(let op, let setName, let sk, let sd, let timeout):
            let set = try setNamed(setName)
            var s = "\(op.text) @\(NftText.name(setName)) { " + (try concatText(sk, types: set.key.fieldTypes))
            if let timeout { s += " timeout \(NftFormat.duration(ms: timeout))" }
            if let sd {
                guard case .values(let spec)? = set.data else { throw fail("dynset data into a set") }
                s += " : " + (try concatText(sd, types: spec.fieldTypes))
            }
            out.append(s + " }")
        case .reject(let type, let code):
            out.append(try rejectText(type, code))
        case .unknown(let n):
            throw fail("expression \(n) is not modelled")
        }
    }

    mutating func cmp(_ op: NftCmpOp, _ v: Sym, _ data: [UInt8]) throws {
        let opText = op == .eq ? "" : op.text + " "
        switch v {
        case .field(let f):
            if case .meta(.nfproto) = f, data.count == 1 {
                if data[0] == 2 { netFamily = .ip } else if data[0] == 10 { netFamily = .ip6 }
            }
            guard data.count == f.dataType.byteLength || f.dataType == .ifname else {
                throw fail("cmp of \(data.count) bytes against \(f.text)")
            }
            if f.dataType == .ifname && data.count != 16 { throw fail("interface name wildcard") }
            out.append("\(f.text) \(opText)\(NftFormat.value(data, type: f.dataType))")
        case .partial(let f, let n):
            guard op == .eq || op == .neq else { throw fail("ordered compare on a prefix") }
            let full = data + [UInt8](repeating: 0, count: f.dataType.byteLength - data.count)
            out.append("\(f.text) \(opText)\(NftFormat.value(full, type: f.dataType))/\(n * 8)")
        case .masked(let f, let mask, let xor):
            guard xor.allSatisfy({ $0 == 0 }) else { throw fail("compare after xor") }
            switch f.dataType {
            case .ipv4Addr, .ipv6Addr:
                guard let len = NftBits.prefixLength(ofMask: mask), op == .eq || op == .neq else {
                    throw fail("non-prefix mask on an address")
                }
                out.append("\(f.text) \(opText)\(NftFormat.value(data, type: f.dataType))/\(len)")
            case .ctState, .ctStatus:
                guard data.allSatisfy({ $0 == 0 }) else { throw fail("ct bits compared with a non-zero value") }
                let names = NftFormat.value(mask, type: f.dataType)
                switch op {
                case .neq: out.append("\(f.text) \(names)")
                case .eq: out.append("\(f.text) != \(names)")
                default: throw fail("ordered compare on ct bits")
                }
            default:
                guard mask.count == 4 else { throw fail("mask on a non-32-bit value") }
                out.append("\(f.text) & \(NftFormat.hex32(NftValue.hostUInt32(mask))) \(op.text) \(NftFormat.value(data, type: f.dataType))")
            }
        case .data, .mapped:
            throw fail("compare against a computed value")
        }
    }

    mutating func nat(_ type: NftNatType, _ fam: NftFamily, _ amin: NftRegister?, _ amax: NftRegister?,
                      _ pmin: NftRegister?, _ pmax: NftRegister?, _ flags: NftNatFlags) throws {
        guard amax == nil, pmax == nil else { throw fail("nat ranges") }
        guard let amin else { throw fail("nat without address") }
        let kw = type == .dnat ? "dnat" : "snat"
        let addrType: NftDataType = fam == .ip6 ? .ipv6Addr : .ipv4Addr
        var extra = flags
        var s: String
        switch try sym(amin) {
        case .data(let a):
            s = "\(kw) \(fam.rawValue) to "
            let addr = NftFormat.value(a, type: addrType)
            if let pmin {
                guard case .data(let p) = try sym(pmin) else { throw fail("nat port from a computed value") }
                guard flags.contains(.protoSpecified) else { throw fail("nat port without proto flag") }
                extra.remove(.protoSpecified)
                let port = NftFormat.value(p, type: .inetService)
                s += fam == .ip6 ? "[\(addr)]:\(port)" : "\(addr):\(port)"
            } else {
                s += addr
            }
        case .mapped(let key, let map, let types, let part):
            guard part == 0, types.first == addrType else { throw fail("nat from a map with other data") }
            if let pmin {
                guard case .mapped(_, map, _, 1)? = regs[try slot(pmin)], types.count == 2 else {
                    throw fail("nat port register is not the map's port")
                }
            } else if types.count != 1 {
                throw fail("map data has a port but nat does not use it")
            }
            s = "\(kw) \(fam.rawValue) to \(key) map @\(NftText.name(map))"
        default:
            throw fail("nat address from an unsupported source")
        }
        let words = extra.words
        guard extra.subtracting([.random, .fullyRandom, .persistent]).isEmpty else {
            throw fail("nat flags 0x\(String(flags.rawValue, radix: 16))")
        }
        if !words.isEmpty { s += " " + words.joined(separator: ",") }
        out.append(s)
    }

    func rejectText(_ type: NftRejectType, _ code: UInt8) throws -> String {
        switch type {
        case .tcpReset:
            return "reject with tcp reset"
        case .icmpUnreach:
            if family == .ip6 || netFamily == .ip6 {
                let names: [UInt8: String] = [0: "no-route", 1: "admin-prohibited", 3: "addr-unreachable", 4: "port-unreachable"]
                return "reject with icmpv6 type \(names[code] ?? String(code))"
            }
            let names: [UInt8: String] = [0: "net-unreachable", 1: "host-unreachable", 2: "prot-unreachable",
                                          3: "port-unreachable", 9: "net-prohibited", 10: "host-prohibited",
                                          13: "admin-prohibited"]
            return "reject with icmp type \(names[code] ?? String(code))"
        case .icmpxUnreach:
            let names: [UInt8: String] = [0: "no-route", 1: "port-unreachable", 2: "host-unreachable", 3: "admin-prohibited"]
            return "reject with icmpx type \(names[code] ?? String(code))"
        }
    }
}

