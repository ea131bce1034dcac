import CNetfilter
import NftModel
import NftApply
#if canImport(Glibc)
import Glibc
#endif

/// NftModel values → libnftnl objects → netlink messages in a batch.
enum Encode {
    static let elementAttributeLimit = 64_000   // nested element list must stay under 64 KiB

    /// `index` is the change's position in its batch: a new set's NFTA_SET_ID (unique in the
    /// batch, whichever thread encodes the change).
    static func messages(for c: NftChange, index: Int, into b: inout BatchBuffer, nextSeq: () -> UInt32) throws {
        let fam = UInt16(c.table.family.netlinkValue)
        let create = UInt16(NLM_F_REQUEST | NLM_F_CREATE)
        let plain = UInt16(NLM_F_REQUEST)
        switch c {
        case .addTable(let id, let comment):
            let t = table(id, comment: comment)
            defer { nftnl_table_free(t) }
            emit(&b, NFT_MSG_NEWTABLE.rawValue, fam, create, nextSeq(), 4096) { nftnl_table_nlmsg_build_payload($0, t) }
        case .deleteTable(let id):
            let t = table(id, comment: nil)
            defer { nftnl_table_free(t) }
            emit(&b, NFT_MSG_DELTABLE.rawValue, fam, plain, nextSeq(), 4096) { nftnl_table_nlmsg_build_payload($0, t) }
        case .addChain(let id, let ch):
            let o = chain(id, ch.name)
            defer { nftnl_chain_free(o) }
            if let base = ch.base {
                nftnl_chain_set_u32(o, A(NFTNL_CHAIN_HOOKNUM), base.hook.netlinkValue)
                nftnl_chain_set_s32(o, A(NFTNL_CHAIN_PRIO), base.priority)
                nftnl_chain_set_str(o, A(NFTNL_CHAIN_TYPE), base.type.rawValue)
                nftnl_chain_set_u32(o, A(NFTNL_CHAIN_POLICY), base.policy.netlinkValue)
            }
            if let u = Udata.comment(ch.comment) {
                u.withUnsafeBytes { _ = nftnl_chain_set_data(o, A(NFTNL_CHAIN_USERDATA), $0.baseAddress, UInt32($0.count)) }
            }
            emit(&b, NFT_MSG_NEWCHAIN.rawValue, fam, create, nextSeq(), 4096) { nftnl_chain_nlmsg_build_payload($0, o) }
        case .flushChain(let id, let name):
            let r = nftnl_rule_alloc()!
            defer { nftnl_rule_free(r) }
            nftnl_rule_set_str(r, A(NFTNL_RULE_TABLE), id.name)
            nftnl_rule_set_str(r, A(NFTNL_RULE_CHAIN), name)
            emit(&b, NFT_MSG_DELRULE.rawValue, fam, plain, nextSeq(), 4096) { nftnl_rule_nlmsg_build_payload($0, r) }
        case .deleteChain(let id, let name):
            let o = chain(id, name)
            defer { nftnl_chain_free(o) }
            emit(&b, NFT_MSG_DELCHAIN.rawValue, fam, plain, nextSeq(), 4096) { nftnl_chain_nlmsg_build_payload($0, o) }
        case .addSet(let id, let s):
            let o = set(id, s, setID: UInt32(truncatingIfNeeded: index &+ 1))
            defer { nftnl_set_free(o) }
            emit(&b, NFT_MSG_NEWSET.rawValue, fam, create, nextSeq(), 4096) { nftnl_set_nlmsg_build_payload($0, o) }
        case .deleteSet(let id, let name):
            let o = nftnl_set_alloc()!
            defer { nftnl_set_free(o) }
            nftnl_set_set_str(o, A(NFTNL_SET_TABLE), id.name)
            nftnl_set_set_str(o, A(NFTNL_SET_NAME), name)
            emit(&b, NFT_MSG_DELSET.rawValue, fam, plain, nextSeq(), 4096) { nftnl_set_nlmsg_build_payload($0, o) }
        case .addElements(let id, let s):
            try elements(id, s, NFT_MSG_NEWSETELEM.rawValue, create, fam, &b, nextSeq, delete: false)
        case .deleteElements(let id, let s):
            try elements(id, s, NFT_MSG_DELSETELEM.rawValue, plain, fam, &b, nextSeq, delete: true)
        case .addRule(let id, let chainName, let rule), .replaceRule(let id, let chainName, _, let rule):
            let r = nftnl_rule_alloc()!
            defer { nftnl_rule_free(r) }
            nftnl_rule_set_str(r, A(NFTNL_RULE_TABLE), id.name)
            nftnl_rule_set_str(r, A(NFTNL_RULE_CHAIN), chainName)
            var flags = create | UInt16(NLM_F_APPEND)
            if case .replaceRule(_, _, let handle, _) = c {
                nftnl_rule_set_u64(r, A(NFTNL_RULE_HANDLE), handle)
                flags = UInt16(NLM_F_REQUEST | NLM_F_REPLACE)
            }
            var bound = 1024 + (rule.comment?.utf8.count ?? 0)
            for e in rule.exprs {
                nftnl_rule_add_expr(r, expr(e))
                bound += 256 + e.dataBytes
            }
            if let u = Udata.comment(rule.comment) {
                u.withUnsafeBytes { _ = nftnl_rule_set_data(r, A(NFTNL_RULE_USERDATA), $0.baseAddress, UInt32($0.count)) }
            }
            emit(&b, NFT_MSG_NEWRULE.rawValue, fam, flags, nextSeq(), bound) {
                nftnl_rule_nlmsg_build_payload($0, r)
            }
        }
    }

    /// Builds one message at the batch tail (at most `bound` bytes) and accepts it.
    private static func emit(_ b: inout BatchBuffer, _ type: UInt32, _ family: UInt16, _ flags: UInt16, _ seq: UInt32,
                             _ bound: Int, _ payload: (UnsafeMutablePointer<nlmsghdr>) -> Void) {
        let p = b.reserve(bound)
        let nlh = nftnl_nlmsg_build_hdr(p, UInt16(type), family, flags, seq)!
        payload(nlh)
        precondition(b.pendingLength <= bound, "netlink message overran its buffer bound")
        b.commitMessage()
    }

    static func table(_ id: NftTableID, comment: String?) -> OpaquePointer {
        let t = nftnl_table_alloc()!
        nftnl_table_set_str(t, A(NFTNL_TABLE_NAME), id.name)
        if let u = Udata.comment(comment) {
            u.withUnsafeBytes { _ = nftnl_table_set_data(t, A(NFTNL_TABLE_USERDATA), $0.baseAddress, UInt32($0.count)) }
        }
        return t
    }

    static func chain(_ id: NftTableID, _ name: String) -> OpaquePointer {
        let c = nftnl_chain_alloc()!
        nftnl_chain_set_str(c, A(NFTNL_CHAIN_TABLE), id.name)
        nftnl_chain_set_str(c, A(NFTNL_CHAIN_NAME), name)
        return c
    }

    static func set(_ id: NftTableID, _ s: NftSet, setID: UInt32) -> OpaquePointer {
        let o = nftnl_set_alloc()!
        nftnl_set_set_str(o, A(NFTNL_SET_TABLE), id.name)
        nftnl_set_set_str(o, A(NFTNL_SET_NAME), s.name)
        nftnl_set_set_u32(o, A(NFTNL_SET_FLAGS), s.kernelFlags)
        // NFTA_SET_ID is mandatory for NEWSET (it names the set inside the transaction).
        nftnl_set_set_u32(o, A(NFTNL_SET_ID), setID)
        nftnl_set_set_u32(o, A(NFTNL_SET_KEY_TYPE), s.key.typeId)
        nftnl_set_set_u32(o, A(NFTNL_SET_KEY_LEN), UInt32(s.key.byteLength))
        switch s.data {
        case .verdict?:
            nftnl_set_set_u32(o, A(NFTNL_SET_DATA_TYPE), 0xffff_ff00)   // NFT_DATA_VERDICT
            nftnl_set_set_u32(o, A(NFTNL_SET_DATA_LEN), 0)
        case .values(let d)?:
            nftnl_set_set_u32(o, A(NFTNL_SET_DATA_TYPE), d.typeId)
            nftnl_set_set_u32(o, A(NFTNL_SET_DATA_LEN), UInt32(d.byteLength))
        case nil:
            break
        }
        if let t = s.timeoutMs { nftnl_set_set_u64(o, A(NFTNL_SET_TIMEOUT), t) }
        if let size = s.size { nftnl_set_set_u32(o, A(NFTNL_SET_DESC_SIZE), size) }
        if s.key.isConcat && s.flags.contains(.interval) {
            // Field lengths of a concatenated interval key (NFTA_SET_DESC_CONCAT), as nft sends them.
            var lens = s.key.fieldTypes.map { UInt8($0.byteLength) }
            lens.append(0)
            lens.withUnsafeBytes { _ = nftnl_set_set_data(o, A(NFTNL_SET_DESC_CONCAT), $0.baseAddress, UInt32($0.count - 1)) }
        }
        let u = Udata.set(s)
        u.withUnsafeBytes { _ = nftnl_set_set_data(o, A(NFTNL_SET_USERDATA), $0.baseAddress, UInt32($0.count)) }
        return o
    }

    static func keyBytes(_ values: [NftValue], concat: Bool) -> [UInt8] {
        concat ? values.flatMap { $0.paddedBytes } : (values.first?.bytes.array ?? [])
    }

    /// Element messages for one set, split so each message's element list stays under 64 KiB.
    private static func elements(_ id: NftTableID, _ s: NftSet, _ type: UInt32, _ flags: UInt16, _ fam: UInt16,
                                 _ b: inout BatchBuffer, _ nextSeq: () -> UInt32, delete: Bool) throws {
        for chunk in NftBatchLimits.chunks(s) {
            try elementChunk(id, s, chunk, type, flags, fam, &b, nextSeq, delete: delete)
        }
    }

    private static func elementChunk(_ id: NftTableID, _ s: NftSet, _ chunk: ArraySlice<NftElement>, _ type: UInt32,
                                     _ flags: UInt16, _ fam: UInt16, _ b: inout BatchBuffer, _ nextSeq: () -> UInt32,
                                     delete: Bool) throws {
        let o = nftnl_set_alloc()!
        defer { nftnl_set_free(o) }
        nftnl_set_set_str(o, A(NFTNL_SET_TABLE), id.name)
        nftnl_set_set_str(o, A(NFTNL_SET_NAME), s.name)
        let concat = s.key.isConcat
        let dataConcat = (s.data?.fieldTypes.count ?? 0) > 1
        var bound = 4096
        for e in chunk {
            let key = keyBytes(e.key.start, concat: concat)
            bound += 256 + 3 * key.count + (e.comment?.utf8.count ?? 0) + (e.data.map { _ in 512 } ?? 0)
            if s.isSingleFieldInterval {
                // The kernel's rbtree stores a range as a start element and an end element
                // (exclusive end, flagged NFT_SET_ELEM_INTERVAL_END).
                nftnl_set_elem_add(o, element(e, key: key, keyEnd: nil, s, dataConcat, delete: delete))
                if let end = e.key.end?.first, let next = increment(end.bytes.array) {
                    let se = nftnl_set_elem_alloc()!
                    next.withUnsafeBytes { _ = nftnl_set_elem_set(se, A(NFTNL_SET_ELEM_KEY), $0.baseAddress, UInt32($0.count)) }
                    nftnl_set_elem_set_u32(se, A(NFTNL_SET_ELEM_FLAGS), 1)
                    nftnl_set_elem_add(o, se)
                } else if e.key.end == nil, let next = increment(key) {
                    // A single address is the range [a, a].
                    let se = nftnl_set_elem_alloc()!
                    next.withUnsafeBytes { _ = nftnl_set_elem_set(se, A(NFTNL_SET_ELEM_KEY), $0.baseAddress, UInt32($0.count)) }
                    nftnl_set_elem_set_u32(se, A(NFTNL_SET_ELEM_FLAGS), 1)
                    nftnl_set_elem_add(o, se)
                }
            } else {
                let keyEnd = e.key.end.map { keyBytes($0, concat: concat) } ?? (s.flags.contains(.interval) ? key : nil)
                nftnl_set_elem_add(o, element(e, key: key, keyEnd: keyEnd, s, dataConcat, delete: delete))
            }
        }
        let p = b.reserve(bound)
        let nlh = nftnl_nlmsg_build_hdr(p, UInt16(type), fam, flags, 0)!
        nftnl_set_elems_nlmsg_build_payload(nlh, o)
        let len = b.pendingLength
        precondition(len <= bound, "element message overran its buffer bound")
        if len > elementAttributeLimit {
            // The estimate was too low: never send a truncated nest (the kernel would accept it
            // and insert nothing). Split and retry.
            guard chunk.count > 1 else {
                throw NftKernelError.io(operation: "encode element of \(s.name)", errno: EMSGSIZE, message: "one element exceeds 64 KiB")
            }
            let mid = chunk.startIndex + chunk.count / 2
            try elementChunk(id, s, chunk[chunk.startIndex..<mid], type, flags, fam, &b, nextSeq, delete: delete)
            try elementChunk(id, s, chunk[mid...], type, flags, fam, &b, nextSeq, delete: delete)
            return
        }
        nlh.pointee.nlmsg_seq = nextSeq()
        b.commitMessage()
    }

    private static func element(_ e: NftElement, key: [UInt8], keyEnd: [UInt8]?, _ s: NftSet, _ dataConcat: Bool,
                                delete: Bool) -> OpaquePointer {
        let se = nftnl_set_elem_alloc()!
        key.withUnsafeBytes { _ = nftnl_set_elem_set(se, A(NFTNL_SET_ELEM_KEY), $0.baseAddress, UInt32($0.count)) }
        if let keyEnd {
            keyEnd.withUnsafeBytes { _ = nftnl_set_elem_set(se, A(NFTNL_SET_ELEM_KEY_END), $0.baseAddress, UInt32($0.count)) }
        }
        if delete { return se }
        switch e.data {
        case .verdict(let v)?:
            nftnl_set_elem_set_u32(se, A(NFTNL_SET_ELEM_VERDICT), UInt32(bitPattern: v.code))
            if let c = v.chain { nftnl_set_elem_set_str(se, A(NFTNL_SET_ELEM_CHAIN), c) }
        case .values(let vs)?:
            let d = keyBytes(vs, concat: dataConcat)
            d.withUnsafeBytes { _ = nftnl_set_elem_set(se, A(NFTNL_SET_ELEM_DATA), $0.baseAddress, UInt32($0.count)) }
        case nil:
            break
        }
        if let t = e.timeoutMs { nftnl_set_elem_set_u64(se, A(NFTNL_SET_ELEM_TIMEOUT), t) }
        if let u = Udata.comment(e.comment) {
            u.withUnsafeBytes { _ = nftnl_set_elem_set(se, A(NFTNL_SET_ELEM_USERDATA), $0.baseAddress, UInt32($0.count)) }
        }
        return se
    }

    /// Big-endian +1 (nil on overflow: the range reaches the top of the space).
    static func increment(_ b: [UInt8]) -> [UInt8]? {
        var out = b
        var i = out.count - 1
        while i >= 0 {
            if out[i] == 0xff { out[i] = 0; i -= 1 } else { out[i] += 1; return out }
        }
        return nil
    }

    // MARK: expressions

    static func expr(_ e: NftExpr) -> OpaquePointer {
        let x = nftnl_expr_alloc(e.kernelName)!
        func u32(_ a: Int, _ v: UInt32) { nftnl_expr_set_u32(x, A(a), v) }
        func reg(_ a: Int, _ r: NftRegister) { nftnl_expr_set_u32(x, A(a), r.rawValue) }
        func data(_ a: Int, _ d: NftBytes) { d.withUnsafeBytes { _ = nftnl_expr_set(x, A(a), $0.baseAddress, UInt32($0.count)) } }
        switch e {
        case .payload(let base, let off, let len, let dreg):
            reg(NFTNL_EXPR_PAYLOAD_DREG, dreg)
            u32(NFTNL_EXPR_PAYLOAD_BASE, base.rawValue)
            u32(NFTNL_EXPR_PAYLOAD_OFFSET, off)
            u32(NFTNL_EXPR_PAYLOAD_LEN, len)
        case .meta(let key, let dreg):
            u32(NFTNL_EXPR_META_KEY, key.rawValue)
            reg(NFTNL_EXPR_META_DREG, dreg)
        case .metaSet(let key, let sreg):
            u32(NFTNL_EXPR_META_KEY, key.rawValue)
            reg(NFTNL_EXPR_META_SREG, sreg)
        case .ct(let key, let dreg, let dir):
            u32(NFTNL_EXPR_CT_KEY, key.rawValue)
            reg(NFTNL_EXPR_CT_DREG, dreg)
            if let dir { nftnl_expr_set_u8(x, A(NFTNL_EXPR_CT_DIR), dir.rawValue) }
        case .ctSet(let key, let sreg):
            u32(NFTNL_EXPR_CT_KEY, key.rawValue)
            reg(NFTNL_EXPR_CT_SREG, sreg)
        case .cmp(let op, let sreg, let d):
            reg(NFTNL_EXPR_CMP_SREG, sreg)
            u32(NFTNL_EXPR_CMP_OP, op.rawValue)
            data(NFTNL_EXPR_CMP_DATA, d)
        case .bitwise(let sreg, let dreg, let mask, let xor):
            reg(NFTNL_EXPR_BITWISE_SREG, sreg)
            reg(NFTNL_EXPR_BITWISE_DREG, dreg)
            u32(NFTNL_EXPR_BITWISE_LEN, UInt32(mask.count))
            data(NFTNL_EXPR_BITWISE_MASK, mask)
            data(NFTNL_EXPR_BITWISE_XOR, xor)
        case .byteorder(let sreg, let dreg, let op, let len, let size):
            reg(NFTNL_EXPR_BYTEORDER_SREG, sreg)
            reg(NFTNL_EXPR_BYTEORDER_DREG, dreg)
            u32(NFTNL_EXPR_BYTEORDER_OP, op.rawValue)
            u32(NFTNL_EXPR_BYTEORDER_LEN, len)
            u32(NFTNL_EXPR_BYTEORDER_SIZE, size)
        case .lookup(let set, let sreg, let dreg, let invert):
            nftnl_expr_set_str(x, A(NFTNL_EXPR_LOOKUP_SET), set)
            reg(NFTNL_EXPR_LOOKUP_SREG, sreg)
            if let dreg { reg(NFTNL_EXPR_LOOKUP_DREG, dreg) }
            if invert { u32(NFTNL_EXPR_LOOKUP_FLAGS, 1) }   // NFT_LOOKUP_F_INV
        case .immediateData(let dreg, let d):
            reg(NFTNL_EXPR_IMM_DREG, dreg)
            data(NFTNL_EXPR_IMM_DATA, d)
        case .verdict(let v):
            reg(NFTNL_EXPR_IMM_DREG, .verdict)
            u32(NFTNL_EXPR_IMM_VERDICT, UInt32(bitPattern: v.code))
            if let c = v.chain { nftnl_expr_set_str(x, A(NFTNL_EXPR_IMM_CHAIN), c) }
        case .nat(let type, let family, let amin, let amax, let pmin, let pmax, let flags):
            u32(NFTNL_EXPR_NAT_TYPE, type.rawValue)
            u32(NFTNL_EXPR_NAT_FAMILY, UInt32(family.netlinkValue))
            if let amin { reg(NFTNL_EXPR_NAT_REG_ADDR_MIN, amin) }
            if let amax { reg(NFTNL_EXPR_NAT_REG_ADDR_MAX, amax) }
            if let pmin { reg(NFTNL_EXPR_NAT_REG_PROTO_MIN, pmin) }
            if let pmax { reg(NFTNL_EXPR_NAT_REG_PROTO_MAX, pmax) }
            if flags.rawValue != 0 { u32(NFTNL_EXPR_NAT_FLAGS, flags.rawValue) }
        case .masq(let flags, let pmin, let pmax):
            if flags.rawValue != 0 { u32(NFTNL_EXPR_MASQ_FLAGS, flags.rawValue) }
            if let pmin { reg(NFTNL_EXPR_MASQ_REG_PROTO_MIN, pmin) }
            if let pmax { reg(NFTNL_EXPR_MASQ_REG_PROTO_MAX, pmax) }
        case .numgen(let dreg, let mod, let type, let offset):
            reg(NFTNL_EXPR_NG_DREG, dreg)
            u32(NFTNL_EXPR_NG_MODULUS, mod)
            u32(NFTNL_EXPR_NG_TYPE, type.rawValue)
            if offset != 0 { u32(NFTNL_EXPR_NG_OFFSET, offset) }
        case .dynset(let op, let set, let sk, let sd, let timeout):
            nftnl_expr_set_str(x, A(NFTNL_EXPR_DYNSET_SET_NAME), set)
            u32(NFTNL_EXPR_DYNSET_OP, op.rawValue)
            reg(NFTNL_EXPR_DYNSET_SREG_KEY, sk)
            if let sd { reg(NFTNL_EXPR_DYNSET_SREG_DATA, sd) }
            if let timeout { nftnl_expr_set_u64(x, A(NFTNL_EXPR_DYNSET_TIMEOUT), timeout) }
        case .fib(let flags, let result, let dreg):
            reg(NFTNL_EXPR_FIB_DREG, dreg)
            u32(NFTNL_EXPR_FIB_RESULT, result.rawValue)
            u32(NFTNL_EXPR_FIB_FLAGS, flags.rawValue)
        case .reject(let type, let code):
            u32(NFTNL_EXPR_REJECT_TYPE, type.rawValue)
            nftnl_expr_set_u8(x, A(NFTNL_EXPR_REJECT_CODE), code)
        case .counter, .notrack:
            break
        case .unknown:
            break
        }
        return x
    }
}

extension NftExpr {
    /// Bytes of data carried (for message size bounds).
    var dataBytes: Int {
        switch self {
        case .cmp(_, _, let d), .immediateData(_, let d): return d.count
        case .bitwise(_, _, let m, let x): return m.count + x.count
        case .lookup(let s, _, _, _), .dynset(_, let s, _, _, _): return s.utf8.count
        case .verdict(let v): return v.chain?.utf8.count ?? 0
        default: return 0
        }
    }
}
