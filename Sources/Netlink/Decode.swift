import CNetfilter
import NftModel
import NftApply

/// libnftnl objects from kernel dumps → NftModel values.
enum Decode {
    static func data(_ o: OpaquePointer, _ attr: UInt16,
                     _ get: (OpaquePointer?, UInt16, UnsafeMutablePointer<UInt32>?) -> UnsafeRawPointer?) -> [UInt8]? {
        var len: UInt32 = 0
        guard let p = get(o, attr, &len) else { return nil }
        return Array(UnsafeRawBufferPointer(start: p, count: Int(len)))
    }

    static func chain(_ c: OpaquePointer, in id: NftTableID) throws -> NftChain {
        let name = String(cString: nftnl_chain_get_str(c, A(NFTNL_CHAIN_NAME)))
        var ch = NftChain(name: name)
        if nftnl_chain_is_set(c, A(NFTNL_CHAIN_HOOKNUM)) {
            let hooknum = nftnl_chain_get_u32(c, A(NFTNL_CHAIN_HOOKNUM))
            let typeName = nftnl_chain_is_set(c, A(NFTNL_CHAIN_TYPE)) ? String(cString: nftnl_chain_get_str(c, A(NFTNL_CHAIN_TYPE))) : "filter"
            guard let hook = NftHook(netlinkValue: hooknum), let type = NftChainType(rawValue: typeName) else {
                throw NftKernelError.decode(object: "chain \(id.family.rawValue) \(id.name) \(name)", reason: "hook \(hooknum) type \(typeName)")
            }
            let policy: NftChainPolicy = nftnl_chain_get_u32(c, A(NFTNL_CHAIN_POLICY)) == 0 ? .drop : .accept
            ch.base = NftBaseChain(type: type, hook: hook, priority: nftnl_chain_get_s32(c, A(NFTNL_CHAIN_PRIO)), policy: policy)
        }
        ch.comment = Udata.parseComment(data(c, A(NFTNL_CHAIN_USERDATA), nftnl_chain_get_data))
        return ch
    }

    /// Splits a (possibly concatenated) nft type id into field types.
    static func types(_ typeId: UInt32, length: Int) -> [NftDataType]? {
        if let t = NftDataType(typeId: typeId, length: length), t.byteLength == length || t == .integer(bytes: length) {
            return [t]
        }
        var ids: [UInt32] = []
        var v = typeId
        while v > 0 { ids.insert(v & 0x3f, at: 0); v >>= 6 }
        let out = ids.compactMap { NftDataType(typeId: $0, length: 4) }
        guard out.count == ids.count, out.reduce(0, { $0 + $1.paddedLength }) == length else { return nil }
        return out
    }

    static func set(_ s: OpaquePointer, in id: NftTableID) throws -> NftSet? {
        let name = String(cString: nftnl_set_get_str(s, A(NFTNL_SET_NAME)))
        let kflags = nftnl_set_get_u32(s, A(NFTNL_SET_FLAGS))
        if kflags & 0x1 != 0 { return nil }   // anonymous sets belong to their rule
        let obj = "set \(id.family.rawValue) \(id.name) \(name)"
        let udata = data(s, A(NFTNL_SET_USERDATA), nftnl_set_get_data)
        let keyType = nftnl_set_get_u32(s, A(NFTNL_SET_KEY_TYPE))
        let keyLen = Int(nftnl_set_get_u32(s, A(NFTNL_SET_KEY_LEN)))
        let key: NftTypeSpec
        if let f = Udata.typeofFields(udata, Udata.keyTypeof) {
            key = .typeof(f)
        } else if let t = types(keyType, length: keyLen) {
            key = .types(t)
        } else {
            throw NftKernelError.decode(object: obj, reason: "key type 0x\(String(keyType, radix: 16)) length \(keyLen)")
        }
        var set = NftSet(name: name, key: key)
        if kflags & 0x8 != 0 {
            let dataType = nftnl_set_get_u32(s, A(NFTNL_SET_DATA_TYPE))
            let dataLen = Int(nftnl_set_get_u32(s, A(NFTNL_SET_DATA_LEN)))
            if dataType == 0xffff_ff00 {
                set.data = .verdict
            } else if let f = Udata.typeofFields(udata, Udata.dataTypeof) {
                set.data = .values(.typeof(f))
            } else if let t = types(dataType, length: dataLen) {
                set.data = .values(.types(t))
            } else {
                throw NftKernelError.decode(object: obj, reason: "data type 0x\(String(dataType, radix: 16)) length \(dataLen)")
            }
        }
        set.flags = NftSetFlags(rawValue: kflags & (0x2 | 0x4 | 0x10 | 0x20))
        if nftnl_set_is_set(s, A(NFTNL_SET_TIMEOUT)) {
            let t = nftnl_set_get_u64(s, A(NFTNL_SET_TIMEOUT))
            if t > 0 { set.timeoutMs = t }
        }
        if nftnl_set_is_set(s, A(NFTNL_SET_DESC_SIZE)) {
            let n = nftnl_set_get_u32(s, A(NFTNL_SET_DESC_SIZE))
            // The kernel gives dynamic sets without a size its default of 65535 and reports it.
            if n > 0 && !(n == 65535 && kflags & 0x20 != 0) { set.size = n }
        }
        if let u = udata { set.comment = Udata.string(Udata.value(u[...], Udata.setComment)) }
        return set
    }

    struct RawElement {
        var key: [UInt8]
        var keyEnd: [UInt8]?
        var flags: UInt32
        var verdict: Int32?
        var chain: String?
        var data: [UInt8]?
        var timeout: UInt64?
        var udata: [UInt8]?
    }

    static func rawElements(_ s: OpaquePointer, into out: inout [RawElement]) {
        guard let it = nftnl_set_elems_iter_create(s) else { return }
        defer { nftnl_set_elems_iter_destroy(it) }
        var e = nftnl_set_elems_iter_next(it)
        while let se = e {
            func get(_ a: Int) -> [UInt8]? { data(se, A(a), nftnl_set_elem_get) }
            func isSet(_ a: Int) -> Bool { nftnl_set_elem_is_set(se, A(a)) }
            var r = RawElement(key: get(NFTNL_SET_ELEM_KEY) ?? [], keyEnd: get(NFTNL_SET_ELEM_KEY_END),
                               flags: isSet(NFTNL_SET_ELEM_FLAGS) ? nftnl_set_elem_get_u32(se, A(NFTNL_SET_ELEM_FLAGS)) : 0)
            if isSet(NFTNL_SET_ELEM_VERDICT) {
                r.verdict = Int32(bitPattern: nftnl_set_elem_get_u32(se, A(NFTNL_SET_ELEM_VERDICT)))
                if isSet(NFTNL_SET_ELEM_CHAIN) { r.chain = String(cString: nftnl_set_elem_get_str(se, A(NFTNL_SET_ELEM_CHAIN))) }
            }
            r.data = get(NFTNL_SET_ELEM_DATA)
            if isSet(NFTNL_SET_ELEM_TIMEOUT) { r.timeout = nftnl_set_elem_get_u64(se, A(NFTNL_SET_ELEM_TIMEOUT)) }
            r.udata = get(NFTNL_SET_ELEM_USERDATA)
            out.append(r)
            e = nftnl_set_elems_iter_next(it)
        }
    }

    static func split(_ bytes: [UInt8], _ types: [NftDataType]) -> [NftValue]? {
        if types.count == 1 {
            return [NftValue(type: types[0], bytes: bytes)]
        }
        var out: [NftValue] = []
        var i = 0
        for t in types {
            guard i + t.paddedLength <= bytes.count else { return nil }
            out.append(NftValue(type: t, bytes: Array(bytes[i..<(i + t.byteLength)])))
            i += t.paddedLength
        }
        return out
    }

    static func elements(_ raw: [RawElement], of s: NftSet, in id: NftTableID) throws -> [NftElement] {
        let keyTypes = s.key.fieldTypes
        let obj = "element of set \(id.family.rawValue) \(id.name) \(s.name)"
        func value(_ r: RawElement) throws -> (NftElementData?, UInt64?, String?) {
            var d: NftElementData? = nil
            if let v = r.verdict {
                guard let verdict = NftVerdict(code: v, chain: r.chain) else { throw NftKernelError.decode(object: obj, reason: "verdict \(v)") }
                d = .verdict(verdict)
            } else if let bytes = r.data, case .values(let spec)? = s.data {
                guard let vs = split(bytes, spec.fieldTypes) else { throw NftKernelError.decode(object: obj, reason: "data length \(bytes.count)") }
                d = .values(vs)
            }
            let timeout = r.timeout.flatMap { $0 == 0 || $0 == s.timeoutMs ? nil : $0 }
            return (d, timeout, Udata.parseComment(r.udata))
        }
        if s.isSingleFieldInterval {
            // Rebuild [start, end] ranges from start / end (exclusive, flagged) elements.
            let sorted = raw.sorted { $0.key.lexicographicallyPrecedes($1.key) }
            var out: [NftElement] = []
            var i = 0
            while i < sorted.count {
                let r = sorted[i]
                i += 1
                if r.flags & 1 != 0 { continue }   // an end without a start (nft's leading 0 end)
                var end = [UInt8](repeating: 0xff, count: r.key.count)
                if i < sorted.count, sorted[i].flags & 1 != 0 {
                    end = decrement(sorted[i].key)
                    i += 1
                }
                let (d, t, c) = try value(r)
                out.append(NftElement(key: [NftValue(type: keyTypes[0], bytes: r.key)],
                                      keyEnd: [NftValue(type: keyTypes[0], bytes: end)], data: d, timeoutMs: t, comment: c))
            }
            return out
        }
        return try raw.map { r in
            guard let key = split(r.key, keyTypes) else { throw NftKernelError.decode(object: obj, reason: "key length \(r.key.count)") }
            let keyEnd = try r.keyEnd.map { b -> [NftValue] in
                guard let v = split(b, keyTypes) else { throw NftKernelError.decode(object: obj, reason: "key end length \(b.count)") }
                return v
            }
            let (d, t, c) = try value(r)
            return NftElement(key: key, keyEnd: keyEnd, data: d, timeoutMs: t, comment: c)
        }
    }

    static func decrement(_ b: [UInt8]) -> [UInt8] {
        var out = b
        var i = out.count - 1
        while i >= 0 {
            if out[i] == 0 { out[i] = 0xff; i -= 1 } else { out[i] -= 1; return out }
        }
        return out
    }

    // MARK: rules

    static func rule(_ r: OpaquePointer, sets: [String: NftSet]) -> NftRule {
        var exprs: [NftExpr] = []
        if let it = nftnl_expr_iter_create(r) {
            var e = nftnl_expr_iter_next(it)
            while let x = e {
                exprs.append(expr(x))
                e = nftnl_expr_iter_next(it)
            }
            nftnl_expr_iter_destroy(it)
        }
        var rule = NftRule(exprs, comment: Udata.parseComment(data(r, A(NFTNL_RULE_USERDATA), nftnl_rule_get_data)))
        if nftnl_rule_is_set(r, A(NFTNL_RULE_HANDLE)) { rule.handle = nftnl_rule_get_u64(r, A(NFTNL_RULE_HANDLE)) }
        return rule
    }

    static func expr(_ x: OpaquePointer) -> NftExpr {
        let name = String(cString: nftnl_expr_get_str(x, A(NFTNL_EXPR_NAME)))
        func has(_ a: Int) -> Bool { nftnl_expr_is_set(x, A(a)) }
        func u32(_ a: Int) -> UInt32 { nftnl_expr_get_u32(x, A(a)) }
        func reg(_ a: Int) -> NftRegister { NftRegister(rawValue: u32(a)) }
        func optReg(_ a: Int) -> NftRegister? { has(a) ? reg(a) : nil }
        func bytes(_ a: Int) -> NftBytes { NftBytes(data(x, A(a), nftnl_expr_get) ?? []) }
        switch name {
        case "payload":
            guard has(NFTNL_EXPR_PAYLOAD_DREG), let base = NftPayloadBase(rawValue: u32(NFTNL_EXPR_PAYLOAD_BASE)) else { break }
            return .payload(base: base, offset: u32(NFTNL_EXPR_PAYLOAD_OFFSET), len: u32(NFTNL_EXPR_PAYLOAD_LEN),
                            dreg: reg(NFTNL_EXPR_PAYLOAD_DREG))
        case "meta":
            guard let key = NftMetaKey(rawValue: u32(NFTNL_EXPR_META_KEY)) else { break }
            if has(NFTNL_EXPR_META_DREG) { return .meta(key: key, dreg: reg(NFTNL_EXPR_META_DREG)) }
            if has(NFTNL_EXPR_META_SREG) { return .metaSet(key: key, sreg: reg(NFTNL_EXPR_META_SREG)) }
        case "ct":
            guard let key = NftCtKey(rawValue: u32(NFTNL_EXPR_CT_KEY)) else { break }
            if has(NFTNL_EXPR_CT_DREG) {
                let dir = has(NFTNL_EXPR_CT_DIR) ? NftCtDirection(rawValue: nftnl_expr_get_u8(x, A(NFTNL_EXPR_CT_DIR))) : nil
                return .ct(key: key, dreg: reg(NFTNL_EXPR_CT_DREG), direction: dir)
            }
            if has(NFTNL_EXPR_CT_SREG) { return .ctSet(key: key, sreg: reg(NFTNL_EXPR_CT_SREG)) }
        case "cmp":
            guard let op = NftCmpOp(rawValue: u32(NFTNL_EXPR_CMP_OP)) else { break }
            return .cmp(op: op, sreg: reg(NFTNL_EXPR_CMP_SREG), data: bytes(NFTNL_EXPR_CMP_DATA))
        case "bitwise":
            if has(NFTNL_EXPR_BITWISE_OP) && u32(NFTNL_EXPR_BITWISE_OP) != 0 { break }   // shifts: not modelled
            return .bitwise(sreg: reg(NFTNL_EXPR_BITWISE_SREG), dreg: reg(NFTNL_EXPR_BITWISE_DREG),
                            mask: bytes(NFTNL_EXPR_BITWISE_MASK), xor: bytes(NFTNL_EXPR_BITWISE_XOR))
        case "byteorder":
            guard let op = NftByteorderOp(rawValue: u32(NFTNL_EXPR_BYTEORDER_OP)) else { break }
            return .byteorder(sreg: reg(NFTNL_EXPR_BYTEORDER_SREG), dreg: reg(NFTNL_EXPR_BYTEORDER_DREG), op: op,
                              len: u32(NFTNL_EXPR_BYTEORDER_LEN), size: u32(NFTNL_EXPR_BYTEORDER_SIZE))
        case "lookup":
            let set = String(cString: nftnl_expr_get_str(x, A(NFTNL_EXPR_LOOKUP_SET)))
            let inv = has(NFTNL_EXPR_LOOKUP_FLAGS) && u32(NFTNL_EXPR_LOOKUP_FLAGS) & 1 != 0
            return .lookup(set: set, sreg: reg(NFTNL_EXPR_LOOKUP_SREG), dreg: optReg(NFTNL_EXPR_LOOKUP_DREG), invert: inv)
        case "immediate":
            let dreg = reg(NFTNL_EXPR_IMM_DREG)
            if dreg == .verdict {
                let code = Int32(bitPattern: u32(NFTNL_EXPR_IMM_VERDICT))
                let chain = has(NFTNL_EXPR_IMM_CHAIN) ? String(cString: nftnl_expr_get_str(x, A(NFTNL_EXPR_IMM_CHAIN))) : nil
                if let v = NftVerdict(code: code, chain: chain) { return .verdict(v) }
                break
            }
            return .immediateData(dreg: dreg, data: bytes(NFTNL_EXPR_IMM_DATA))
        case "nat":
            guard let type = NftNatType(rawValue: u32(NFTNL_EXPR_NAT_TYPE)),
                  let fam = NftFamily(netlinkValue: UInt8(truncatingIfNeeded: u32(NFTNL_EXPR_NAT_FAMILY))) else { break }
            let amin = optReg(NFTNL_EXPR_NAT_REG_ADDR_MIN)
            // As dumped: the kernel fills in max registers and MAP_IPS/PROTO_SPECIFIED itself;
            // NftRule.canonical() is how desired and dumped rules are compared.
            let flags = NftNatFlags(rawValue: has(NFTNL_EXPR_NAT_FLAGS) ? u32(NFTNL_EXPR_NAT_FLAGS) : 0)
            return .nat(type: type, family: fam, addrMin: amin, addrMax: optReg(NFTNL_EXPR_NAT_REG_ADDR_MAX),
                        protoMin: optReg(NFTNL_EXPR_NAT_REG_PROTO_MIN), protoMax: optReg(NFTNL_EXPR_NAT_REG_PROTO_MAX), flags: flags)
        case "masq":
            return .masq(flags: NftNatFlags(rawValue: has(NFTNL_EXPR_MASQ_FLAGS) ? u32(NFTNL_EXPR_MASQ_FLAGS) : 0),
                         protoMin: optReg(NFTNL_EXPR_MASQ_REG_PROTO_MIN), protoMax: optReg(NFTNL_EXPR_MASQ_REG_PROTO_MAX))
        case "numgen":
            guard let t = NftNumgenType(rawValue: u32(NFTNL_EXPR_NG_TYPE)) else { break }
            return .numgen(dreg: reg(NFTNL_EXPR_NG_DREG), modulus: u32(NFTNL_EXPR_NG_MODULUS), type: t,
                           offset: has(NFTNL_EXPR_NG_OFFSET) ? u32(NFTNL_EXPR_NG_OFFSET) : 0)
        case "dynset":
            guard let op = NftDynsetOp(rawValue: u32(NFTNL_EXPR_DYNSET_OP)) else { break }
            let t = has(NFTNL_EXPR_DYNSET_TIMEOUT) ? nftnl_expr_get_u64(x, A(NFTNL_EXPR_DYNSET_TIMEOUT)) : 0
            return .dynset(op: op, set: String(cString: nftnl_expr_get_str(x, A(NFTNL_EXPR_DYNSET_SET_NAME))),
                           sregKey: reg(NFTNL_EXPR_DYNSET_SREG_KEY), sregData: optReg(NFTNL_EXPR_DYNSET_SREG_DATA),
                           timeoutMs: t == 0 ? nil : t)
        case "fib":
            guard let r = NftFibResult(rawValue: u32(NFTNL_EXPR_FIB_RESULT)) else { break }
            return .fib(flags: NftFibFlags(rawValue: u32(NFTNL_EXPR_FIB_FLAGS)), result: r, dreg: reg(NFTNL_EXPR_FIB_DREG))
        case "reject":
            guard let t = NftRejectType(rawValue: u32(NFTNL_EXPR_REJECT_TYPE)) else { break }
            return .reject(type: t, code: nftnl_expr_get_u8(x, A(NFTNL_EXPR_REJECT_CODE)))
        case "counter":
            return .counter
        case "notrack":
            return .notrack
        default:
            break
        }
        return .unknown(name)
    }
}
