import CNetfilter
import NftModel
import NftApply
import Parallel
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Attribute ids: libnftnl's named enums import as structs, anonymous ones as Int.
@inline(__always) func A<T: RawRepresentable>(_ x: T) -> UInt16 where T.RawValue: BinaryInteger { UInt16(x.rawValue) }
@inline(__always) func A(_ x: Int) -> UInt16 { UInt16(x) }
@inline(__always) func A(_ x: Int32) -> UInt16 { UInt16(x) }
@inline(__always) func A(_ x: UInt32) -> UInt16 { UInt16(x) }

func errnoText(_ e: Int32) -> String { String(cString: strerror(e)) }

/// The real kernel: one netlink socket (libmnl) and libnftnl objects. The only Swift type
/// that sees C types; it implements `NftKernel` in NftModel values.
public final class NftNetlink: NftKernel {
    private let nl: OpaquePointer
    private let portid: UInt32
    private var seq: UInt32
    private var sndbuf = 0
    private var rcvbuf = 0
    private var recvBuffer: UnsafeMutableRawPointer
    private let recvBufferSize = 1 << 20

    public init() throws {
        do {
            nl = try openBoundSocket(NETLINK_NETFILTER)
        } catch {
            throw NftKernelError.io(operation: "\(error.step) netlink socket", errno: error.errno, message: errnoText(error.errno))
        }
        portid = mnl_socket_get_portid(nl)
        seq = UInt32(truncatingIfNeeded: time(nil))
        recvBuffer = UnsafeMutableRawPointer.allocate(byteCount: recvBufferSize, alignment: 8)
        var one: Int32 = 1
        // Errors without the original message (keeps the receive queue small for big batches).
        _ = setsockopt(fd, 270 /* SOL_NETLINK */, 10 /* NETLINK_CAP_ACK */, &one, socklen_t(4))
        _ = setsockopt(fd, 270, 11 /* NETLINK_EXT_ACK */, &one, socklen_t(4))
        growBuffers(send: 1 << 20, receive: 4 << 20)
    }

    deinit {
        mnl_socket_close(nl)
        recvBuffer.deallocate()
    }

    private var fd: Int32 { mnl_socket_get_fd(nl) }

    private func nextSeq() -> UInt32 {
        seq &+= 1
        return seq
    }

    /// Grows SO_SNDBUF/SO_RCVBUF (the FORCE variants as root, plain ones otherwise).
    private func growBuffers(send: Int, receive: Int) {
        if send > sndbuf {
            var v = Int32(clamping: send)
            if setsockopt(fd, SOL_SOCKET, 32 /* SO_SNDBUFFORCE */, &v, socklen_t(4)) != 0 {
                _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, socklen_t(4))
            }
            sndbuf = send
        }
        if receive > rcvbuf {
            var v = Int32(clamping: receive)
            if setsockopt(fd, SOL_SOCKET, 33 /* SO_RCVBUFFORCE */, &v, socklen_t(4)) != 0 {
                _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, socklen_t(4))
            }
            rcvbuf = receive
        }
    }

    // MARK: request / response

    /// Sends one request message and feeds every response message to `each` until DONE or
    /// the final ACK/error. Returns the errno of a final error (0 if none).
    private func request(type: UInt32, family: UInt8, flags: Int32,
                         build: (UnsafeMutablePointer<nlmsghdr>) -> Void,
                         each: (UnsafeMutablePointer<nlmsghdr>) throws -> Void) throws -> Int32 {
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 65536, alignment: 8)
        defer { buf.deallocate() }
        let s = nextSeq()
        let nlh = nftnl_nlmsg_build_hdr(buf.assumingMemoryBound(to: CChar.self), UInt16(type), UInt16(family),
                                        UInt16(flags), s)!
        build(nlh)
        guard mnl_socket_sendto(nl, nlh, Int(nlh.pointee.nlmsg_len)) >= 0 else {
            throw NftKernelError.io(operation: "send netlink request", errno: errno, message: errnoText(errno))
        }
        do {
            return try receiveAnswers(nl, buffer: recvBuffer, size: recvBufferSize, seq: s, singleAnswer: false, each: each)
        } catch let e as NetlinkReceiveFailure {
            throw NftKernelError.io(operation: "receive netlink response", errno: e.errno, message: errnoText(e.errno))
        }
    }

    public func generation() throws -> UInt32 {
        var gen: UInt32 = 0
        var err: Int32 = 0
        err = try request(type: NFT_MSG_GETGEN.rawValue, family: UInt8(AF_UNSPEC), flags: NLM_F_REQUEST | NLM_F_ACK,
                          build: { _ in }, each: { h in
                              let g = nftnl_gen_alloc()!
                              defer { nftnl_gen_free(g) }
                              if nftnl_gen_nlmsg_parse(h, g) >= 0 { gen = nftnl_gen_get_u32(g, A(NFTNL_GEN_ID)) }
                          })
        if err != 0 { throw NftKernelError.io(operation: "get ruleset generation", errno: err, message: errnoText(err)) }
        return gen
    }

    // MARK: dump

    public func tableIDs() throws -> [NftTableID] {
        var ids: [NftTableID] = []
        try dump(NFT_MSG_GETTABLE.rawValue, UInt8(AF_UNSPEC), build: { _ in }, each: { h in
            let t = nftnl_table_alloc()!
            defer { nftnl_table_free(t) }
            guard nftnl_table_nlmsg_parse(h, t) >= 0, let name = nftnl_table_get_str(t, A(NFTNL_TABLE_NAME)),
                  let family = NftFamily(netlinkValue: UInt8(truncatingIfNeeded: nftnl_table_get_u32(t, A(NFTNL_TABLE_FAMILY)))) else { return }
            ids.append(NftTableID(family, String(cString: name)))
        }, what: "tables")
        return ids
    }

    public func dumpTable(_ id: NftTableID) throws -> NftTable? {
        try dumpTable(id, only: nil)
    }

    public func dumpTable(_ id: NftTableID, chains: Set<String>, sets: Set<String>) throws -> NftTable? {
        try dumpTable(id, only: (chains, sets))
    }

    /// The table; with `only`, just the named chains and sets (each fetched by name).
    private func dumpTable(_ id: NftTableID, only: (chains: Set<String>, sets: Set<String>)?) throws -> NftTable? {
        let fam = id.family.netlinkValue
        // The table itself (a GET by name: no other table is read).
        var table: NftTable? = nil
        let terr = try request(type: NFT_MSG_GETTABLE.rawValue, family: fam, flags: NLM_F_REQUEST | NLM_F_ACK, build: { nlh in
            let t = nftnl_table_alloc()!
            defer { nftnl_table_free(t) }
            nftnl_table_set_str(t, A(NFTNL_TABLE_NAME), id.name)
            nftnl_table_nlmsg_build_payload(nlh, t)
        }, each: { h in
            let t = nftnl_table_alloc()!
            defer { nftnl_table_free(t) }
            guard nftnl_table_nlmsg_parse(h, t) >= 0 else { return }
            table = NftTable(family: id.family, name: id.name, comment: Udata.parseComment(Decode.data(t, A(NFTNL_TABLE_USERDATA), nftnl_table_get_data)))
        })
        if terr == ENOENT { return nil }
        if terr != 0 { throw NftKernelError.io(operation: "get \(id)", errno: terr, message: errnoText(terr)) }
        guard var t = table else { return nil }

        var chains: [NftChain] = []
        var sets: [NftSet] = []
        if let only {
            for name in only.chains.sorted() { chains += try readChains(id, named: name) }
            for name in only.sets.sorted() { sets += try readSets(id, named: name) }
        } else {
            chains = try readChains(id, named: nil)
            sets = try readSets(id, named: nil)
        }
        for i in sets.indices {
            sets[i].elements = try dumpElements(id, sets[i])
        }

        // Rules, one dump per chain. A table-wide rule dump resumes each 32 KiB chunk by
        // walking the table's rules from the start again (quadratic: 5.5 s of kernel time for
        // 175,000 rules); a chain's dump walks only that chain.
        let setsByName = Dictionary(sets.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for i in chains.indices {
            var rules: [NftRule] = []
            let name = chains[i].name
            try dump(NFT_MSG_GETRULE.rawValue, fam, build: { nlh in
                let r = nftnl_rule_alloc()!
                defer { nftnl_rule_free(r) }
                nftnl_rule_set_str(r, A(NFTNL_RULE_TABLE), id.name)
                nftnl_rule_set_str(r, A(NFTNL_RULE_CHAIN), name)
                nftnl_rule_nlmsg_build_payload(nlh, r)
            }, each: { h in
                let r = nftnl_rule_alloc()!
                defer { nftnl_rule_free(r) }
                guard nftnl_rule_nlmsg_parse(h, r) >= 0 else { throw NftKernelError.decode(object: "rule in \(id) chain \(name)", reason: "unparseable message") }
                rules.append(Decode.rule(r, sets: setsByName))
            }, what: "rules of \(id) chain \(name)")
            chains[i].rules = rules
        }
        t.chains = chains
        t.sets = sets
        return t
    }

    /// The chains of table `id` (without rules): the one named `name` (a GET by name; none if it
    /// does not exist), or all of them (a dump: the kernel cannot filter chain dumps by table, so
    /// chains of other tables of the family are skipped after reading their table attribute).
    private func readChains(_ id: NftTableID, named name: String?) throws -> [NftChain] {
        var chains: [NftChain] = []
        let what = name.map { "\(id) chain \($0)" } ?? "chains of \(id)"
        let err = try request(type: NFT_MSG_GETCHAIN.rawValue, family: id.family.netlinkValue,
                              flags: NLM_F_REQUEST | (name == nil ? NLM_F_DUMP : NLM_F_ACK), build: { nlh in
            let c = nftnl_chain_alloc()!
            defer { nftnl_chain_free(c) }
            nftnl_chain_set_str(c, A(NFTNL_CHAIN_TABLE), id.name)
            if let name { nftnl_chain_set_str(c, A(NFTNL_CHAIN_NAME), name) }
            nftnl_chain_nlmsg_build_payload(nlh, c)
        }, each: { h in
            let c = nftnl_chain_alloc()!
            defer { nftnl_chain_free(c) }
            guard nftnl_chain_nlmsg_parse(h, c) >= 0 else { throw NftKernelError.decode(object: what, reason: "unparseable message") }
            guard String(cString: nftnl_chain_get_str(c, A(NFTNL_CHAIN_TABLE))) == id.name else { return }
            chains.append(try Decode.chain(c, in: id))
        })
        if err != 0 && !(name != nil && err == ENOENT) {
            throw NftKernelError.io(operation: (name == nil ? "dump " : "get ") + what, errno: err, message: errnoText(err))
        }
        return chains
    }

    /// The sets of table `id` (without elements): the one named `name`, or all of them (a dump,
    /// filtered by table in the kernel).
    private func readSets(_ id: NftTableID, named name: String?) throws -> [NftSet] {
        var sets: [NftSet] = []
        let what = name.map { "\(id) set \($0)" } ?? "sets of \(id)"
        let err = try request(type: NFT_MSG_GETSET.rawValue, family: id.family.netlinkValue,
                              flags: NLM_F_REQUEST | (name == nil ? NLM_F_DUMP : NLM_F_ACK), build: { nlh in
            let s = nftnl_set_alloc()!
            defer { nftnl_set_free(s) }
            nftnl_set_set_str(s, A(NFTNL_SET_TABLE), id.name)
            if let name { nftnl_set_set_str(s, A(NFTNL_SET_NAME), name) }
            nftnl_set_nlmsg_build_payload(nlh, s)
        }, each: { h in
            let s = nftnl_set_alloc()!
            defer { nftnl_set_free(s) }
            guard nftnl_set_nlmsg_parse(h, s) >= 0 else { throw NftKernelError.decode(object: what, reason: "unparseable message") }
            guard String(cString: nftnl_set_get_str(s, A(NFTNL_SET_TABLE))) == id.name else { return }
            if let set = try Decode.set(s, in: id) { sets.append(set) }
        })
        if err != 0 && !(name != nil && err == ENOENT) {
            throw NftKernelError.io(operation: (name == nil ? "dump " : "get ") + what, errno: err, message: errnoText(err))
        }
        return sets
    }

    private func dump(_ type: UInt32, _ family: UInt8, build: (UnsafeMutablePointer<nlmsghdr>) -> Void,
                      each: (UnsafeMutablePointer<nlmsghdr>) throws -> Void, what: String) throws {
        let err = try request(type: type, family: family, flags: NLM_F_REQUEST | NLM_F_DUMP, build: build, each: each)
        if err != 0 { throw NftKernelError.io(operation: "dump \(what)", errno: err, message: errnoText(err)) }
    }

    private func dumpElements(_ id: NftTableID, _ set: NftSet) throws -> [NftElement] {
        var raw: [Decode.RawElement] = []
        try dump(NFT_MSG_GETSETELEM.rawValue, id.family.netlinkValue, build: { nlh in
            let s = nftnl_set_alloc()!
            defer { nftnl_set_free(s) }
            nftnl_set_set_str(s, A(NFTNL_SET_TABLE), id.name)
            nftnl_set_set_str(s, A(NFTNL_SET_NAME), set.name)
            nftnl_set_elems_nlmsg_build_payload(nlh, s)
        }, each: { h in
            let s = nftnl_set_alloc()!
            defer { nftnl_set_free(s) }
            guard nftnl_set_elems_nlmsg_parse(h, s) >= 0 else {
                throw NftKernelError.decode(object: "elements of set \(set.name)", reason: "unparseable message")
            }
            Decode.rawElements(s, into: &raw)
        }, what: "elements of set \(id.family.rawValue) \(id.name) \(set.name)")
        return try Decode.elements(raw, of: set, in: id)
    }

    // MARK: commit

    public func commit(_ changes: [NftChange], generation: UInt32) throws -> NftCommitStats {
        try commit(changes, generation: generation, during: {})
    }

    /// Batches of at least this many changes are encoded in parallel runs.
    static let parallelEncodingThreshold = 20_000

    /// Encodes `changes` into one batch (`base`: the sequence number of BATCH_BEGIN) and returns
    /// it with the change index of every message after BATCH_BEGIN. Large batches are encoded in
    /// parallel runs, each into its own buffer with sequence numbers from 1, then appended in
    /// order with their numbers shifted.
    static func encode(_ changes: [NftChange], base: UInt32, generation: UInt32,
                       threshold: Int = parallelEncodingThreshold) throws -> (batch: BatchBuffer, owner: [Int]) {
        var batch = BatchBuffer()
        var owner: [Int] = []
        owner.reserveCapacity(changes.count + 16)
        batch.begin(seq: base, genid: generation)
        do {
            if changes.count < threshold {
                var s = base
                for (i, c) in changes.enumerated() {
                    try Encode.messages(for: c, index: i, into: &batch, nextSeq: {
                        s &+= 1
                        owner.append(i)
                        return s
                    })
                }
            } else {
                let runs = Parallel.mapRuns(count: changes.count, minimumCount: 0) { (range: Range<Int>) -> Result<(BatchBuffer, [Int]), Error> in
                    var part = BatchBuffer(capacity: 1 << 16)
                    var partOwner: [Int] = []
                    partOwner.reserveCapacity(range.count + 16)
                    var local: UInt32 = 0
                    do {
                        for i in range {
                            try Encode.messages(for: changes[i], index: i, into: &part, nextSeq: {
                                local &+= 1
                                partOwner.append(i)
                                return local
                            })
                        }
                        return .success((part, partOwner))
                    } catch {
                        part.free()
                        return .failure(error)
                    }
                }
                defer { for case .success(let (part, _)) in runs { part.free() } }
                for r in runs {
                    let (part, partOwner) = try r.get()
                    batch.append(part, seqOffset: base &+ UInt32(truncatingIfNeeded: owner.count))
                    owner += partOwner
                }
            }
        } catch {
            batch.free()
            throw error
        }
        // Ask an ACK for the last message only: success is then confirmed positively.
        batch.setAckOnLastMessage()
        batch.end(seq: base &+ UInt32(truncatingIfNeeded: owner.count) &+ 1)
        return (batch, owner)
    }

    /// `commit`, with `during` run on another core while the kernel works through the batch
    /// (the send is one system call; encoding comes first and uses every core).
    public func commit(_ changes: [NftChange], generation: UInt32, during: () -> Void) throws -> NftCommitStats {
        let base = nextSeq()
        let (batch, owner) = try Self.encode(changes, base: base, generation: generation)
        defer { batch.free() }
        let s = base &+ UInt32(truncatingIfNeeded: owner.count) &+ 1
        seq = s
        let messages = owner.count + 2
        growBuffers(send: batch.used + 65536, receive: max(4 << 20, min(owner.count * 64, 64 << 20)))

        // errno is per thread: taken right after the send, on the thread that sent.
        let (sendResult, _) = Parallel.both({ [fd] in (send(fd, batch.base, batch.used, 0), errno) }, during)
        let (sent, sendErrno) = try sendResult.get()
        if sent < 0 {
            let e = sendErrno
            throw NftKernelError.io(operation: "send batch of \(messages) messages (\(batch.used) bytes)", errno: e, message: errnoText(e))
        }
        // The kernel processed the batch inside sendmsg: its errors and our ACK are queued.
        var errors: [NftObjectError] = []
        var acked = false
        var restart = false
        while true {
            let n = recv(fd, recvBuffer, recvBufferSize, Int32(MSG_DONTWAIT))
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { break }
                throw NftKernelError.io(operation: "receive batch errors", errno: errno, message: errnoText(errno))
            }
            var off = 0
            while off + MemoryLayout<nlmsghdr>.size <= n {
                let h = (recvBuffer + off).assumingMemoryBound(to: nlmsghdr.self)
                let len = Int(h.pointee.nlmsg_len)
                guard len >= MemoryLayout<nlmsghdr>.size, off + len <= n else { break }
                off += (len + 3) & ~3
                guard Int32(h.pointee.nlmsg_type) == NLMSG_ERROR else { continue }
                let err = -(UnsafeMutableRawPointer(h) + MemoryLayout<nlmsghdr>.size).load(as: Int32.self)
                let msgSeq = h.pointee.nlmsg_seq
                if err == 0 {
                    if msgSeq == s - 1 || owner.isEmpty { acked = true }
                    continue
                }
                if err == ERESTART { restart = true; continue }
                let k = Int(msgSeq &- base) - 1
                if k >= 0 && k < owner.count {
                    let idx = owner[k]
                    errors.append(NftObjectError(changeIndex: idx, object: changes[idx].object, errno: err, message: errnoText(err)))
                } else {
                    errors.append(NftObjectError(changeIndex: nil, object: "batch", errno: err, message: errnoText(err)))
                }
            }
        }
        if restart { throw NftKernelError.generationChanged }
        if !errors.isEmpty { throw NftKernelError.batchRefused(errors) }
        if !acked && !owner.isEmpty {
            throw NftKernelError.io(operation: "commit batch", errno: 0, message: "no acknowledgement from the kernel")
        }
        return NftCommitStats(messages: messages, bytes: batch.used)
    }
}

/// A growable buffer of consecutive netlink messages.
struct BatchBuffer {
    private(set) var base: UnsafeMutableRawPointer
    private(set) var capacity: Int
    private(set) var used = 0
    private var lastMessage = -1

    init(capacity: Int = 1 << 20) {
        self.capacity = capacity
        base = UnsafeMutableRawPointer(malloc(capacity)!)
    }

    func free() { Glibc.free(base) }

    /// Makes room for a message of up to `bytes` bytes and returns where to write it.
    mutating func reserve(_ bytes: Int, zeroed: Bool = true) -> UnsafeMutablePointer<CChar> {
        if used + bytes > capacity {
            var c = capacity * 2
            while used + bytes > c { c *= 2 }
            base = realloc(base, c)!
            capacity = c
        }
        // Zeroed: not every libnftnl/libmnl path writes the attribute padding.
        let p = base + used
        if zeroed { memset(p, 0, bytes) }
        return p.assumingMemoryBound(to: CChar.self)
    }

    /// Length of the message just written at the tail.
    var pendingLength: Int {
        Int((base + used).assumingMemoryBound(to: nlmsghdr.self).pointee.nlmsg_len)
    }

    /// Appends the messages of `other`, adding `seqOffset` to each one's sequence number.
    mutating func append(_ other: BatchBuffer, seqOffset: UInt32) {
        guard other.used > 0 else { return }
        _ = reserve(other.used, zeroed: false)   // every byte is copied over
        memcpy(base + used, other.base, other.used)
        var off = 0
        while off < other.used {
            let h = (base + used + off).assumingMemoryBound(to: nlmsghdr.self)
            h.pointee.nlmsg_seq &+= seqOffset
            lastMessage = used + off
            off += (Int(h.pointee.nlmsg_len) + 3) & ~3
        }
        used += other.used
    }

    /// Accepts the message written at the tail.
    mutating func commitMessage() {
        lastMessage = used
        used += (pendingLength + 3) & ~3
    }

    mutating func setAckOnLastMessage() {
        guard lastMessage >= 0 else { return }
        let h = (base + lastMessage).assumingMemoryBound(to: nlmsghdr.self)
        h.pointee.nlmsg_flags |= UInt16(NLM_F_ACK)
    }

    /// NFNL_MSG_BATCH_BEGIN carrying NFNL_BATCH_GENID.
    mutating func begin(seq: UInt32, genid: UInt32) {
        let p = reserve(64)
        let nlh = mnl_nlmsg_put_header(p)!
        nlh.pointee.nlmsg_type = 0x10            // NFNL_MSG_BATCH_BEGIN
        nlh.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST)
        nlh.pointee.nlmsg_seq = seq
        let nfg = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<nfgenmsg>.size)!.assumingMemoryBound(to: nfgenmsg.self)
        nfg.pointee.nfgen_family = UInt8(AF_UNSPEC)
        nfg.pointee.version = UInt8(NFNETLINK_V0)
        nfg.pointee.res_id = UInt16(NFNL_SUBSYS_NFTABLES).bigEndian
        mnl_attr_put_u32(nlh, 1 /* NFNL_BATCH_GENID */, genid.bigEndian)
        used += (pendingLength + 3) & ~3
    }

    mutating func end(seq: UInt32) {
        let p = reserve(64)
        let nlh = mnl_nlmsg_put_header(p)!
        nlh.pointee.nlmsg_type = 0x11            // NFNL_MSG_BATCH_END
        nlh.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST)
        nlh.pointee.nlmsg_seq = seq
        let nfg = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<nfgenmsg>.size)!.assumingMemoryBound(to: nfgenmsg.self)
        nfg.pointee.nfgen_family = UInt8(AF_UNSPEC)
        nfg.pointee.version = UInt8(NFNETLINK_V0)
        nfg.pointee.res_id = UInt16(NFNL_SUBSYS_NFTABLES).bigEndian
        used += (pendingLength + 3) & ~3
    }
}
