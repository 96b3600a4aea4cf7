// An in-memory nf_tables for unit tests: FakeNftKernel holds tables, chains, sets, their
// elements and rules (as libnftnl objects), applies batches all or nothing with the kernel's
// generation check, bumps the generation on each commit, RECORDS every batch it is sent (tests
// decode them with libnftnl) and REPLAYS its state as the kernel's dumps (built with libnftnl).
// FakeNftTransport is the nft::Transport the backends get through BackendConfig::nft_transport.
#pragma once

#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/gen.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "backend/backend.h"
#include "backend/nft/nft_netlink.h"

namespace mw::testing {

/// One message of a recorded batch.
struct NftMessage {
  uint16_t type = 0;  ///< NFT_MSG_*
  uint16_t family = 0;
  uint16_t flags = 0;
  std::vector<char> bytes;  ///< the whole message
  const nlmsghdr* nlh() const { return reinterpret_cast<const nlmsghdr*>(bytes.data()); }
};

/// Every message between batch-begin and batch-end, and the generation the batch carried.
struct NftBatch {
  uint32_t genid = 0;
  std::vector<NftMessage> messages;
  size_t Count(uint16_t type) const {
    size_t n = 0;
    for (const auto& m : messages) n += m.type == type;
    return n;
  }
};

/// Calls f for each attribute after the nfgenmsg header.
template <typename F>
void ForEachAttr(const nlmsghdr* nlh, F f) {
  auto* attr = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
  const char* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
  while (mnl_attr_ok(attr, static_cast<int>(tail - reinterpret_cast<const char*>(attr)))) {
    f(attr);
    attr = mnl_attr_next(attr);
  }
}

inline NftBatch DecodeBatch(const std::vector<char>& bytes) {
  NftBatch out;
  int left = static_cast<int>(bytes.size());
  for (const nlmsghdr* nlh = reinterpret_cast<const nlmsghdr*>(bytes.data()); mnl_nlmsg_ok(nlh, left);
       nlh = mnl_nlmsg_next(nlh, &left)) {
    if (nlh->nlmsg_type == NFNL_MSG_BATCH_BEGIN) {
      ForEachAttr(nlh, [&](const nlattr* attr) {
        if (mnl_attr_get_type(attr) == NFNL_BATCH_GENID) out.genid = ntohl(mnl_attr_get_u32(attr));
      });
      continue;
    }
    if (nlh->nlmsg_type == NFNL_MSG_BATCH_END) continue;
    NftMessage m;
    m.type = static_cast<uint16_t>(nlh->nlmsg_type & 0xff);
    m.family = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh))->nfgen_family;
    m.flags = nlh->nlmsg_flags;
    m.bytes.assign(reinterpret_cast<const char*>(nlh), reinterpret_cast<const char*>(nlh) + nlh->nlmsg_len);
    out.messages.push_back(std::move(m));
  }
  return out;
}

class FakeNftKernel {
 public:
  struct Elem {
    std::vector<uint8_t> key, key_end, data;
    uint32_t flags = 0;
  };
  template <typename T, void (*F)(T*)>
  struct Del {
    void operator()(T* p) const { F(p); }
  };
  using Table = std::shared_ptr<nftnl_table>;
  using Chain = std::shared_ptr<nftnl_chain>;
  using Set = std::shared_ptr<nftnl_set>;
  using Rule = std::shared_ptr<nftnl_rule>;
  using Key = std::tuple<uint32_t, std::string, std::string>;  // family, table, name

  struct State {
    std::map<std::pair<uint32_t, std::string>, Table> tables;
    std::map<Key, Chain> chains;
    std::map<Key, Set> sets;
    /// (key, interval-end flag) -> element, per set.
    std::map<Key, std::map<std::pair<std::vector<uint8_t>, bool>, Elem>> elements;
    std::map<Key, std::vector<Rule>> rules;  ///< per chain, in order
  };

  State state;
  uint32_t generation = 1;
  uint64_t next_handle = 1;
  std::vector<NftBatch> batches;  ///< every batch sent, applied or not
  std::vector<uint16_t> requests;  ///< the type (NFT_MSG_GET*) of every request, in order
  /// Faults: the batch's n-th change message (0-based) is refused with this errno.
  std::optional<std::pair<size_t, int>> fail_message;
  /// Faults: every request (dump) fails with this errno (EPERM: no CAP_NET_ADMIN).
  int fail_requests = 0;
  /// Called before each batch is applied (a foreign commit can be made here).
  std::function<void()> before_batch;
  size_t elements_per_dump_message = 500;

  nft::TransportFactory Factory();

  // ---- direct access for tests (what `nft` would do by hand) ----
  bool HasTable(uint32_t family, const std::string& name) const { return state.tables.count({family, name}) > 0; }
  size_t ElementCount(const std::string& table, const std::string& set, uint32_t family = NFPROTO_INET) const {
    auto it = state.elements.find({family, table, set});
    return it == state.elements.end() ? 0 : it->second.size();
  }
  std::vector<std::string> SetNames(const std::string& table, uint32_t family = NFPROTO_INET) const {
    std::vector<std::string> out;
    for (const auto& [k, s] : state.sets)
      if (std::get<0>(k) == family && std::get<1>(k) == table) out.push_back(std::get<2>(k));
    return out;
  }
  size_t RuleCount(const std::string& table, const std::string& chain, uint32_t family = NFPROTO_INET) const {
    auto it = state.rules.find({family, table, chain});
    return it == state.rules.end() ? 0 : it->second.size();
  }
  /// Removes one element by hand (drift); returns whether there was one.
  bool RemoveFirstElement(const std::string& table, const std::string& set, uint32_t family = NFPROTO_INET) {
    auto it = state.elements.find({family, table, set});
    if (it == state.elements.end() || it->second.empty()) return false;
    it->second.erase(it->second.begin());
    ++generation;
    return true;
  }
  /// A foreign commit: adds a table (another program's) and bumps the generation.
  void AddForeignTable(uint32_t family, const std::string& name, uint32_t flags = 0) {
    Table t(nftnl_table_alloc(), nftnl_table_free);
    nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, family);
    nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, name.c_str());
    nftnl_table_set_u32(t.get(), NFTNL_TABLE_FLAGS, flags);
    nftnl_table_set_u64(t.get(), NFTNL_TABLE_HANDLE, next_handle++);
    state.tables[{family, name}] = t;
    ++generation;
  }
  /// A foreign commit of a whole batch built by hand.
  Status Commit(const nft::Batch& batch) { return Apply(batch); }

  Status Apply(const nft::Batch& batch) {
    if (before_batch) before_batch();
    NftBatch decoded = DecodeBatch(batch.bytes());
    batches.push_back(decoded);
    if (decoded.genid && decoded.genid != generation) return nft::BatchStatus(batch, 0, ERESTART, "");
    State next = state;
    uint64_t handle = next_handle;
    for (size_t i = 0; i < decoded.messages.size(); ++i) {
      const auto& m = decoded.messages[i];
      int err = fail_message && fail_message->first == i ? fail_message->second : ApplyOne(next, handle, m);
      if (err) return nft::BatchStatus(batch, m.nlh()->nlmsg_seq, err, "");
    }
    state = std::move(next);
    next_handle = handle;
    ++generation;
    return Status::Ok();
  }

  Status Request(const std::function<nlmsghdr*(char* buf, uint32_t seq)>& build,
                 const std::function<int(const nlmsghdr*)>& cb) {
    if (fail_requests) return Status::Netlink(std::strerror(fail_requests));
    std::vector<char> req(1 << 16);
    const nlmsghdr* nlh = build(req.data(), 7);
    uint16_t type = nlh->nlmsg_type & 0xff;
    requests.push_back(type);
    uint32_t family = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh))->nfgen_family;
    bool dump = (nlh->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;
    auto match = [&](uint32_t f) { return family == NFPROTO_UNSPEC || family == f; };
    std::vector<std::vector<char>> out;
    auto reply = [&](uint16_t t, uint32_t f) {
      out.emplace_back(1 << 16);
      return nftnl_nlmsg_build_hdr(out.back().data(), t, f, NLM_F_MULTI, 7);
    };
    switch (type) {
      case NFT_MSG_GETGEN: {
        nlmsghdr* r = reply(NFT_MSG_NEWGEN, AF_UNSPEC);
        mnl_attr_put_u32(r, NFTA_GEN_ID, htonl(generation));
        break;
      }
      case NFT_MSG_GETTABLE: {
        std::string want = dump ? "" : StrAttr(nlh, NFTA_TABLE_NAME);
        bool any = false;
        for (const auto& [k, t] : state.tables) {
          if (!match(k.first) || (!dump && k.second != want)) continue;
          any = true;
          nftnl_table_nlmsg_build_payload(reply(NFT_MSG_NEWTABLE, k.first), t.get());
        }
        if (!dump && !any) return Status::Netlink(std::strerror(ENOENT));
        break;
      }
      case NFT_MSG_GETCHAIN:
        for (const auto& [k, c] : state.chains)
          if (match(std::get<0>(k))) nftnl_chain_nlmsg_build_payload(reply(NFT_MSG_NEWCHAIN, std::get<0>(k)), c.get());
        break;
      case NFT_MSG_GETSET:
        for (const auto& [k, s] : state.sets)
          if (match(std::get<0>(k))) nftnl_set_nlmsg_build_payload(reply(NFT_MSG_NEWSET, std::get<0>(k)), s.get());
        break;
      case NFT_MSG_GETRULE:
        for (const auto& [k, c] : state.chains) {
          if (!match(std::get<0>(k))) continue;
          auto rs = state.rules.find(k);
          if (rs == state.rules.end()) continue;
          for (const auto& r : rs->second) nftnl_rule_nlmsg_build_payload(reply(NFT_MSG_NEWRULE, std::get<0>(k)), r.get());
        }
        break;
      case NFT_MSG_GETSETELEM: {
        Key k{family, StrAttr(nlh, NFTA_SET_ELEM_LIST_TABLE), StrAttr(nlh, NFTA_SET_ELEM_LIST_SET)};
        if (!state.sets.count(k)) return Status::Netlink(std::strerror(ENOENT));
        const auto& elems = state.elements[k];
        auto it = elems.begin();
        do {  // one message per elements_per_dump_message elements: a multipart dump
          std::unique_ptr<nftnl_set, void (*)(const nftnl_set*)> s(nftnl_set_alloc(), nftnl_set_free);
          nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, std::get<1>(k).c_str());
          nftnl_set_set_str(s.get(), NFTNL_SET_NAME, std::get<2>(k).c_str());
          for (size_t n = 0; it != elems.end() && n < elements_per_dump_message; ++it, ++n) {
            nftnl_set_elem* e = nftnl_set_elem_alloc();
            const Elem& el = it->second;
            if (!el.key.empty()) nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, el.key.data(), el.key.size());
            if (!el.key_end.empty()) nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY_END, el.key_end.data(), el.key_end.size());
            if (!el.data.empty()) nftnl_set_elem_set(e, NFTNL_SET_ELEM_DATA, el.data.data(), el.data.size());
            if (el.flags) nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_FLAGS, el.flags);
            nftnl_set_elem_add(s.get(), e);
          }
          out.emplace_back(1 << 20);
          nlmsghdr* r = nftnl_nlmsg_build_hdr(out.back().data(), NFT_MSG_NEWSETELEM, family, NLM_F_MULTI, 7);
          nftnl_set_elems_nlmsg_build_payload(r, s.get());
          // libnftnl numbers the nested elements 1, 2, ...; the kernel's dumps type each one
          // NFTA_LIST_ELEM, as readers expect.
          ForEachAttr(r, [](const nlattr* a) {
            if (mnl_attr_get_type(a) != NFTA_SET_ELEM_LIST_ELEMENTS) return;
            const char* p = static_cast<const char*>(mnl_attr_get_payload(a));
            int left = static_cast<int>(mnl_attr_get_payload_len(a));
            while (left >= static_cast<int>(sizeof(nlattr))) {
              auto* e = const_cast<nlattr*>(reinterpret_cast<const nlattr*>(p));
              e->nla_type = static_cast<uint16_t>((e->nla_type & ~NLA_TYPE_MASK) | NFTA_LIST_ELEM);
              int step = static_cast<int>(MNL_ALIGN(e->nla_len));
              if (step <= 0 || step > left) break;
              p += step;
              left -= step;
            }
          });
        } while (it != elems.end());
        break;
      }
      default:
        return Status::Netlink(std::strerror(EOPNOTSUPP));
    }
    for (const auto& m : out)
      if (cb(reinterpret_cast<const nlmsghdr*>(m.data())) < 0) return Status::Netlink("callback failed");
    return Status::Ok();
  }

 private:
  static std::string StrAttr(const nlmsghdr* nlh, uint16_t type) {
    std::string v;
    ForEachAttr(nlh, [&](const nlattr* attr) {
      if (mnl_attr_get_type(attr) == type) v = mnl_attr_get_str(attr);
    });
    return v;
  }
  static std::vector<uint8_t> Bytes(nftnl_set_elem* e, uint16_t attr) {
    if (!nftnl_set_elem_is_set(e, attr)) return {};
    uint32_t len = 0;
    auto* p = static_cast<const uint8_t*>(nftnl_set_elem_get(e, attr, &len));
    return std::vector<uint8_t>(p, p + len);
  }

  /// Applies one change to `st`; returns an errno, 0 when applied.
  static int ApplyOne(State& st, uint64_t& handle, const NftMessage& m) {
    bool excl = m.flags & NLM_F_EXCL;
    switch (m.type) {
      case NFT_MSG_NEWTABLE:
      case NFT_MSG_DELTABLE: {
        Table t(nftnl_table_alloc(), nftnl_table_free);
        if (nftnl_table_nlmsg_parse(m.nlh(), t.get()) < 0) return EINVAL;
        std::pair<uint32_t, std::string> k{m.family, nftnl_table_get_str(t.get(), NFTNL_TABLE_NAME)};
        if (m.type == NFT_MSG_NEWTABLE) {
          if (st.tables.count(k)) return excl ? EEXIST : 0;
          nftnl_table_set_u64(t.get(), NFTNL_TABLE_HANDLE, handle++);
          if (!nftnl_table_is_set(t.get(), NFTNL_TABLE_FLAGS)) nftnl_table_set_u32(t.get(), NFTNL_TABLE_FLAGS, 0);
          st.tables[k] = t;
          return 0;
        }
        if (!st.tables.erase(k)) return ENOENT;
        auto in = [&](const Key& key) { return std::get<0>(key) == k.first && std::get<1>(key) == k.second; };
        for (auto* m2 : {&st.chains}) std::erase_if(*m2, [&](auto& kv) { return in(kv.first); });
        std::erase_if(st.sets, [&](auto& kv) { return in(kv.first); });
        std::erase_if(st.elements, [&](auto& kv) { return in(kv.first); });
        std::erase_if(st.rules, [&](auto& kv) { return in(kv.first); });
        return 0;
      }
      case NFT_MSG_NEWCHAIN: {
        Chain c(nftnl_chain_alloc(), nftnl_chain_free);
        if (nftnl_chain_nlmsg_parse(m.nlh(), c.get()) < 0) return EINVAL;
        std::string table = nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TABLE);
        if (!st.tables.count({m.family, table})) return ENOENT;
        Key k{m.family, table, nftnl_chain_get_str(c.get(), NFTNL_CHAIN_NAME)};
        if (st.chains.count(k)) return excl ? EEXIST : 0;
        nftnl_chain_set_u64(c.get(), NFTNL_CHAIN_HANDLE, handle++);
        st.chains[k] = c;
        return 0;
      }
      case NFT_MSG_NEWSET:
      case NFT_MSG_DELSET: {
        Set s(nftnl_set_alloc(), nftnl_set_free);
        if (nftnl_set_nlmsg_parse(m.nlh(), s.get()) < 0) return EINVAL;
        std::string table = nftnl_set_get_str(s.get(), NFTNL_SET_TABLE);
        Key k{m.family, table, nftnl_set_get_str(s.get(), NFTNL_SET_NAME)};
        if (m.type == NFT_MSG_DELSET) {
          if (!st.sets.erase(k)) return ENOENT;
          st.elements.erase(k);
          return 0;
        }
        if (!st.tables.count({m.family, table})) return ENOENT;
        if (st.sets.count(k)) return excl ? EEXIST : 0;
        nftnl_set_unset(s.get(), NFTNL_SET_ID);
        nftnl_set_set_u64(s.get(), NFTNL_SET_HANDLE, handle++);
        st.sets[k] = s;
        st.elements[k];
        return 0;
      }
      case NFT_MSG_NEWSETELEM:
      case NFT_MSG_DELSETELEM: {
        std::unique_ptr<nftnl_set, void (*)(const nftnl_set*)> s(nftnl_set_alloc(), nftnl_set_free);
        if (nftnl_set_elems_nlmsg_parse(m.nlh(), s.get()) < 0) return EINVAL;
        Key k{m.family, nftnl_set_get_str(s.get(), NFTNL_SET_TABLE), nftnl_set_get_str(s.get(), NFTNL_SET_NAME)};
        if (!st.sets.count(k)) return ENOENT;
        auto& elems = st.elements[k];
        nftnl_set_elems_iter* iter = nftnl_set_elems_iter_create(s.get());
        int err = 0;
        while (nftnl_set_elem* e = nftnl_set_elems_iter_next(iter)) {
          Elem el;
          el.key = Bytes(e, NFTNL_SET_ELEM_KEY);
          el.key_end = Bytes(e, NFTNL_SET_ELEM_KEY_END);
          el.data = Bytes(e, NFTNL_SET_ELEM_DATA);
          el.flags = nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_FLAGS) ? nftnl_set_elem_get_u32(e, NFTNL_SET_ELEM_FLAGS) : 0;
          std::pair<std::vector<uint8_t>, bool> ek{el.key, (el.flags & NFT_SET_ELEM_INTERVAL_END) != 0};
          if (m.type == NFT_MSG_DELSETELEM) {
            if (!elems.erase(ek)) err = ENOENT;
          } else if (elems.count(ek) && excl) {
            err = EEXIST;
          } else {
            elems[ek] = std::move(el);
          }
          if (err) break;
        }
        nftnl_set_elems_iter_destroy(iter);
        return err;
      }
      case NFT_MSG_NEWRULE:
      case NFT_MSG_DELRULE: {
        Rule r(nftnl_rule_alloc(), nftnl_rule_free);
        if (nftnl_rule_nlmsg_parse(m.nlh(), r.get()) < 0) return EINVAL;
        Key k{m.family, nftnl_rule_get_str(r.get(), NFTNL_RULE_TABLE), nftnl_rule_get_str(r.get(), NFTNL_RULE_CHAIN)};
        if (!st.chains.count(k)) return ENOENT;
        auto& rules = st.rules[k];
        auto at_handle = [&](uint64_t h) {
          return std::find_if(rules.begin(), rules.end(),
                              [&](const Rule& x) { return nftnl_rule_get_u64(x.get(), NFTNL_RULE_HANDLE) == h; });
        };
        if (m.type == NFT_MSG_DELRULE) {
          auto it = at_handle(nftnl_rule_get_u64(r.get(), NFTNL_RULE_HANDLE));
          if (it == rules.end()) return ENOENT;
          rules.erase(it);
          return 0;
        }
        bool append = m.flags & NLM_F_APPEND;
        auto pos = append ? rules.end() : rules.begin();
        if (nftnl_rule_is_set(r.get(), NFTNL_RULE_POSITION)) {
          pos = at_handle(nftnl_rule_get_u64(r.get(), NFTNL_RULE_POSITION));
          if (pos == rules.end()) return ENOENT;
          if (append) ++pos;
          nftnl_rule_unset(r.get(), NFTNL_RULE_POSITION);
        }
        nftnl_rule_set_u64(r.get(), NFTNL_RULE_HANDLE, handle++);
        rules.insert(pos, r);
        return 0;
      }
      default:
        return EOPNOTSUPP;
    }
  }
};

class FakeNftTransport : public nft::Transport {
 public:
  explicit FakeNftTransport(FakeNftKernel* kernel) : k_(kernel) {}
  Status Request(const std::function<nlmsghdr*(char* buf, uint32_t seq)>& build,
                 const std::function<int(const nlmsghdr*)>& cb) override {
    return k_->Request(build, cb);
  }
  Status Send(const nft::Batch& batch) override { return k_->Apply(batch); }

 private:
  FakeNftKernel* k_;
};

inline nft::TransportFactory FakeNftKernel::Factory() {
  return [this]() -> Result<std::unique_ptr<nft::Transport>> {
    return std::unique_ptr<nft::Transport>(new FakeNftTransport(this));
  };
}

}  // namespace mw::testing
