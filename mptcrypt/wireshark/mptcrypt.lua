-- mptcrypt dissector for Wireshark / tshark (Lua 5.2, Wireshark 3.x/4.x). docs/protocol.md is the specification.
--
--   every mptcrypt option (TCP kind 253, RFC 6994 ExID 0x4D50): HELLO (version), PKCONF (cipher names),
--   INIT1/INIT2 markers, MAC tag, NEXTK1 join (index, proof) / resume (resume id, proof), NEXTK2, REKEY;
--   the INIT1/INIT2 payloads of daemon-made segments, field by field (§3.1), with expert info when malformed;
--   the verdict `mptcrypt decrypt` wrote into a decrypted capture's packet comments ("mptcrypt: MAC ok" /
--   "mptcrypt: bad MAC"), as mptcrypt.verdict with expert info for a bad MAC.
--
-- Install: `mptcrypt wireshark install` (personal Lua plugin folder), or `tshark -X lua_script:mptcrypt.lua`.
-- It is a postdissector: it reads the option area and payload the TCP dissector found, so it works whatever
-- Wireshark makes of kind 253 itself.

local EXID = 0x4D50
local KIND_EXP = 253
local MAC_OPTION_LEN = 12
local INIT_HEADER_LEN = 8
local NONCE_LEN = 32

local MSG = { HELLO = 1, PKCONF = 2, INIT1 = 3, INIT2 = 4, NEXTK1 = 5, NEXTK2 = 6, REKEY = 7 }
local msg_names = { [1] = "HELLO", [2] = "PKCONF", [3] = "INIT1", [4] = "INIT2", [5] = "NEXTK1", [6] = "NEXTK2",
                    [7] = "REKEY" }
local pub_names = { [1] = "X25519", [2] = "P-256", [3] = "RSA-2048 e=3" }
local sym_names = { [1] = "AES-128", [2] = "ChaCha20" }
local pub_key_len = { [1] = 32, [2] = 65 }  -- K_S sizes of the Diffie-Hellman ciphers; RSA sends 256 bytes

local p = Proto("mptcrypt", "mptcrypt (opportunistic TCP/MPTCP encryption)")
local f = {
    message      = ProtoField.string("mptcrypt.message", "Message"),
    length       = ProtoField.uint8("mptcrypt.length", "Option length"),
    exid         = ProtoField.uint16("mptcrypt.exid", "ExID", base.HEX),
    type         = ProtoField.uint8("mptcrypt.type", "Type", base.DEC, msg_names),
    version      = ProtoField.uint8("mptcrypt.hello.version", "Version"),
    pub_cipher   = ProtoField.uint8("mptcrypt.pkconf.cipher", "Public-key cipher", base.HEX, pub_names),
    mac_tag      = ProtoField.bytes("mptcrypt.mac.tag", "MAC tag"),
    index        = ProtoField.uint16("mptcrypt.nextk1.index", "Key index"),
    resume_id    = ProtoField.bytes("mptcrypt.nextk1.resume_id", "Resume id"),
    nextk1_proof = ProtoField.bytes("mptcrypt.nextk1.proof", "NEXTK1 proof"),
    nextk2_proof = ProtoField.bytes("mptcrypt.nextk2.proof", "NEXTK2 proof"),
    generation   = ProtoField.uint8("mptcrypt.rekey.generation", "Key generation"),
    init_magic   = ProtoField.string("mptcrypt.init.magic", "Magic"),
    init_version = ProtoField.uint8("mptcrypt.init.version", "Version"),
    init_type    = ProtoField.uint8("mptcrypt.init.type", "Type", base.DEC, msg_names),
    init_length  = ProtoField.uint16("mptcrypt.init.length", "Length"),
    i1_pub       = ProtoField.uint8("mptcrypt.init1.pub_cipher", "Public-key cipher", base.HEX, pub_names),
    i1_nsym      = ProtoField.uint8("mptcrypt.init1.sym_count", "Symmetric ciphers offered"),
    i1_sym       = ProtoField.uint8("mptcrypt.init1.sym_cipher", "Symmetric cipher", base.HEX, sym_names),
    i1_n_c       = ProtoField.bytes("mptcrypt.init1.n_c", "N_C"),
    i1_k_c_len   = ProtoField.uint16("mptcrypt.init1.k_c_len", "K_C length"),
    i1_k_c       = ProtoField.bytes("mptcrypt.init1.k_c", "K_C"),
    i2_sym       = ProtoField.uint8("mptcrypt.init2.sym_cipher", "Symmetric cipher", base.HEX, sym_names),
    i2_len       = ProtoField.uint16("mptcrypt.init2.part_len", "Server part length"),
    i2_k_s       = ProtoField.bytes("mptcrypt.init2.k_s", "K_S"),
    i2_n_s       = ProtoField.bytes("mptcrypt.init2.n_s", "n_s"),
    i2_rsa       = ProtoField.bytes("mptcrypt.init2.encrypted_n_s", "ENCRYPT(K_C, N_S)"),
    verdict      = ProtoField.string("mptcrypt.verdict", "Verdict (mptcrypt decrypt)"),
}
p.fields = f

local ex_malformed = ProtoExpert.new("mptcrypt.malformed", "Malformed mptcrypt message", expert.group.MALFORMED,
                                     expert.severity.ERROR)
local ex_bad_mac = ProtoExpert.new("mptcrypt.bad_mac", "MAC does not verify (segment forged or corrupted)",
                                   expert.group.SECURITY, expert.severity.WARN)
local ex_mac_ok = ProtoExpert.new("mptcrypt.mac_ok", "MAC verified, payload decrypted", expert.group.SECURITY,
                                  expert.severity.CHAT)
p.experts = { ex_malformed, ex_bad_mac, ex_mac_ok }

local tcp_options_f = Field.new("tcp.options")
local tcp_payload_f = Field.new("tcp.payload")
local comment_f = Field.new("frame.comment")

local function add_list(tree, field, range)
    for i = 0, range:len() - 1 do
        tree:add(field, range(i, 1))
    end
end

-- one kind-253 option with our ExID; returns its message name (nil if not ours), and the INIT marker type
local function dissect_option(opt, tree)
    local len = opt:len()
    if len < 4 or opt(2, 2):uint() ~= EXID then
        return nil
    end
    local t = tree:add(p, opt, "mptcrypt option")
    t:add(f.length, opt(1, 1))
    t:add(f.exid, opt(2, 2))
    local name, marker
    if len == MAC_OPTION_LEN then  -- the MAC has no type byte: recognised by its length (docs/protocol.md §2)
        name = "MAC"
        t:add(f.mac_tag, opt(4, 8))
    elseif len < 5 then
        name = "malformed"
        t:add_proto_expert_info(ex_malformed, "mptcrypt option without a message type")
    else
        local ty = opt(4, 1):uint()
        local body = len - 5
        t:add(f.type, opt(4, 1))
        if ty == MSG.HELLO and body == 1 then
            name = "HELLO"
            t:add(f.version, opt(5, 1))
        elseif ty == MSG.PKCONF and body >= 1 and body <= 6 then
            name = "PKCONF"
            add_list(t, f.pub_cipher, opt(5, body))
        elseif (ty == MSG.INIT1 or ty == MSG.INIT2) and body == 0 then
            name = msg_names[ty] .. " marker"
            marker = ty
        elseif ty == MSG.NEXTK1 and body == 10 then
            name = "NEXTK1 join"
            t:add(f.index, opt(5, 2))
            t:add(f.nextk1_proof, opt(7, 8))
        elseif ty == MSG.NEXTK1 and body == 16 then
            name = "NEXTK1 resume"
            t:add(f.resume_id, opt(5, 8))
            t:add(f.nextk1_proof, opt(13, 8))
        elseif ty == MSG.NEXTK2 and body == 8 then
            name = "NEXTK2"
            t:add(f.nextk2_proof, opt(5, 8))
        elseif ty == MSG.REKEY and body == 1 then
            name = "REKEY"
            t:add(f.generation, opt(5, 1))
        else
            name = "malformed"
            t:add_proto_expert_info(ex_malformed, string.format("type %d with option length %d is not defined",
                                                                ty, len))
        end
    end
    t:add(f.message, name)
    t:append_text(": " .. name)
    return name, marker
end

-- INIT1 / INIT2 payload (docs/protocol.md §3.1); `expected` is the marker's type
local function dissect_init(pl, tree, expected)
    local t = tree:add(p, pl, "mptcrypt " .. msg_names[expected])
    local n = pl:len()
    local function bad(why)
        t:add_proto_expert_info(ex_malformed, msg_names[expected] .. ": " .. why)
        t:add(f.message, "malformed")
        return "malformed " .. msg_names[expected]
    end
    if n < INIT_HEADER_LEN then
        return bad(string.format("%d bytes, shorter than the 8-byte header", n))
    end
    t:add(f.init_magic, pl(0, 4))
    t:add(f.init_version, pl(4, 1))
    t:add(f.init_type, pl(5, 1))
    t:add(f.init_length, pl(6, 2))
    if pl(0, 4):string() ~= "MPTC" then
        return bad("magic is not \"MPTC\"")
    end
    if pl(5, 1):uint() ~= expected then
        return bad(string.format("type %d in a segment marked %s", pl(5, 1):uint(), msg_names[expected]))
    end
    if pl(6, 2):uint() ~= n then
        return bad(string.format("length field %d, payload %d bytes", pl(6, 2):uint(), n))
    end
    local off = INIT_HEADER_LEN
    if expected == MSG.INIT1 then
        if n < off + 2 then return bad("truncated") end
        t:add(f.i1_pub, pl(off, 1))
        local nsym = pl(off + 1, 1):uint()
        t:add(f.i1_nsym, pl(off + 1, 1))
        off = off + 2
        if nsym == 0 or n < off + nsym + NONCE_LEN + 2 then return bad("truncated cipher list or N_C") end
        add_list(t, f.i1_sym, pl(off, nsym))
        off = off + nsym
        t:add(f.i1_n_c, pl(off, NONCE_LEN))
        off = off + NONCE_LEN
        local klen = pl(off, 2):uint()
        t:add(f.i1_k_c_len, pl(off, 2))
        off = off + 2
        if n - off ~= klen then return bad(string.format("K_C length %d, %d bytes left", klen, n - off)) end
        t:add(f.i1_k_c, pl(off, klen))
    else
        if n < off + 3 then return bad("truncated") end
        t:add(f.i2_sym, pl(off, 1))
        local slen = pl(off + 1, 2):uint()
        t:add(f.i2_len, pl(off + 1, 2))
        off = off + 3
        if n - off ~= slen then return bad(string.format("server part length %d, %d bytes left", slen, n - off)) end
        -- the server part's size says which public-key cipher INIT1 chose
        local ks = nil
        for _, klen in pairs(pub_key_len) do
            if slen == klen + NONCE_LEN then ks = klen end
        end
        if ks then
            t:add(f.i2_k_s, pl(off, ks))
            t:add(f.i2_n_s, pl(off + ks, NONCE_LEN))
        else
            t:add(f.i2_rsa, pl(off, slen))
        end
    end
    t:add(f.message, msg_names[expected])
    return msg_names[expected]
end

function p.dissector(tvb, pinfo, tree)
    local names = {}
    local comment = comment_f()
    if comment and tostring(comment.value):find("^mptcrypt: ") then
        local verdict = tostring(comment.value):sub(11)
        local t = tree:add(p, "mptcrypt verdict: " .. verdict)
        t:add(f.verdict, verdict)
        if verdict == "bad MAC" then
            t:add_proto_expert_info(ex_bad_mac)
        elseif verdict == "MAC ok" then
            t:add_proto_expert_info(ex_mac_ok)
        end
        names[#names + 1] = verdict
    end
    local opts = tcp_options_f()
    local marker
    if opts then
        local area = opts.range
        local i, n = 0, area:len()
        while i < n do
            local kind = area(i, 1):uint()
            if kind == 0 then break end
            if kind == 1 then
                i = i + 1
            else
                if i + 1 >= n then break end
                local len = area(i + 1, 1):uint()
                if len < 2 or i + len > n then break end
                if kind == KIND_EXP then
                    local name, m = dissect_option(area(i, len), tree)
                    if name then names[#names + 1] = name end
                    marker = marker or m
                end
                i = i + len
            end
        end
    end
    if marker then
        local payload = tcp_payload_f()
        if payload then
            names[#names + 1] = dissect_init(payload.range, tree, marker)
        else
            local t = tree:add(p, "mptcrypt " .. msg_names[marker])
            t:add_proto_expert_info(ex_malformed, msg_names[marker] .. " marker on a segment without payload")
            t:add(f.message, "malformed")
            names[#names + 1] = "malformed " .. msg_names[marker]
        end
    end
    if #names > 0 then
        pinfo.cols.protocol:set("mptcrypt")
        pinfo.cols.info:append(" [mptcrypt " .. table.concat(names, ", ") .. "]")
    end
end

register_postdissector(p, true)
