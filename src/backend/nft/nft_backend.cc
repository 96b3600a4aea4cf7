// The nftables backend: reads the live ruleset over netlink (generation-consistent), diffs
// mailward's table against the desired model, applies the diff as one batch.
#include <libnftnl/chain.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <functional>
#include <type_traits>
#include <map>
#include <set>

#include "backend/backend.h"
#include "backend/host_view.h"
#include "backend/nft/nft_codec.h"
#include "backend/nft/nft_netlink.h"
#include "backend/nft/restore_diff.h"
#include "analysis/nft_eval.h"
#include "plan/diff.h"
#include "sys/test_hooks.h"
#include "util/fs.h"
#include "util/text.h"
#include "util/timing.h"

namespace mw {
namespace nft {
namespace {

constexpr int kMaxReadAttempts = 20;
constexpr uint16_t kSnapIntervals = 0xfff0;     // snapshot record: a set's intervals, raw
constexpr uint16_t kSnapIntervalsRef = 0xfff1;  // ... held by the attachment (a cache file)

struct ChainDeleter {
  void operator()(nftnl_chain* c) const { nftnl_chain_free(c); }
};
using ChainPtr = std::unique_ptr<nftnl_chain, ChainDeleter>;

/// Identifies this boot and network namespace, so a cached generation number cannot be
/// mistaken for one of another boot or namespace.
std::string RuntimeIdentity(sys::Env& env) {
  std::string id = sys::BootId(env);
  struct stat st;
  if (stat("/proc/self/ns/net", &st) == 0) id += ":" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  return id;
}

/// The element contents of mailward's allow sets as mailward last wrote them, valid while the
/// ruleset generation and the table handle are unchanged (nobody else committed since).
/// Stored as raw Interval arrays: reading and writing 100,000 entries is one memcpy each.
struct ElementCache {
  static_assert(std::is_trivially_copyable_v<Interval>);
  struct Set {
    Family family = Family::kV4;
    std::vector<Interval> intervals;
  };
  std::string identity;
  uint32_t generation = 0;
  uint64_t table_handle = 0;
  std::map<std::string, Set> sets;
  /// In memory only (RememberElements): the ruleset whose allow sets were written. `written`
  /// holds it when it is the backend's own sharded copy (then `sets` stays empty: no copy of a
  /// million addresses); a caller's ruleset is only named (`written_of`, never dereferenced:
  /// it may be gone) and its sets are copied into `sets`, as before.
  std::shared_ptr<const Ruleset> written;
  const Ruleset* written_of = nullptr;

  /// True when every interval is one address: then only the addresses are stored (4 bytes an
  /// IPv4 host instead of a 33-byte interval), which keeps 100,000 hosts at 400 KB.
  static bool AllHosts(Family family, const std::vector<Interval>& ivs) {
    if (family == Family::kV4) {  // the common case, as integers
      for (const auto& iv : ivs) {
        uint32_t a, b;
        std::memcpy(&a, iv.start.b.data(), 4);
        std::memcpy(&b, iv.end.b.data(), 4);
        a = __builtin_bswap32(a);
        if (a == 0xffffffffu ? !iv.to_max : (iv.to_max || __builtin_bswap32(b) != a + 1)) return false;
      }
      return true;
    }
    for (const auto& iv : ivs)
      if (!(HostInterval(family, iv.start) == iv)) return false;
    return true;
  }

  struct View {
    const std::string* name;
    Family family;
    const std::vector<Interval>* intervals;
  };
  std::string Serialize() const {
    std::vector<View> views;
    for (const auto& [name, s] : sets) views.push_back({&name, s.family, &s.intervals});
    return Serialize(views);
  }
  std::string Serialize(const std::vector<View>& views) const {
    size_t total = 64 + identity.size();
    for (const auto& v : views) total += 16 + v.name->size() + v.intervals->size() * sizeof(Interval);
    std::string out;
    out.reserve(total);
    out = "MWEC3\n" + identity + "\n";
    auto put = [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
    put(&generation, 4);
    put(&table_handle, 8);
    uint32_t n = static_cast<uint32_t>(views.size());
    put(&n, 4);
    for (const auto& v : views) {
      const std::string& name = *v.name;
      const std::vector<Interval>& ivs = *v.intervals;
      uint32_t len = static_cast<uint32_t>(name.size()), count = static_cast<uint32_t>(ivs.size());
      put(&len, 4);
      put(name.data(), len);
      uint8_t fam = v.family == Family::kV4 ? 4 : 6, hosts = AllHosts(v.family, ivs) ? 1 : 0;
      put(&fam, 1);
      put(&hosts, 1);
      put(&count, 4);
      if (hosts) {
        size_t alen = AddrLen(v.family);
        size_t at = out.size();
        out.resize(at + count * alen);
        for (size_t i = 0; i < count; ++i) std::memcpy(out.data() + at + i * alen, ivs[i].start.b.data(), alen);
      } else {
        put(ivs.data(), ivs.size() * sizeof(Interval));
      }
    }
    return out;
  }
  bool Parse(const std::string& str) {
    size_t nl1 = str.find('\n');
    if (nl1 == std::string::npos || str.compare(0, nl1, "MWEC3") != 0) return false;
    size_t nl2 = str.find('\n', nl1 + 1);
    if (nl2 == std::string::npos) return false;
    identity = str.substr(nl1 + 1, nl2 - nl1 - 1);
    size_t pos = nl2 + 1;
    auto get = [&](void* p, size_t n) {
      if (n > str.size() - pos) return false;
      std::memcpy(p, str.data() + pos, n);
      pos += n;
      return true;
    };
    uint32_t n = 0;
    if (!get(&generation, 4) || !get(&table_handle, 8) || !get(&n, 4)) return false;
    for (uint32_t i = 0; i < n; ++i) {
      uint32_t len = 0, count = 0;
      uint8_t fam = 0, hosts = 0;
      if (!get(&len, 4) || len > 1024 || len > str.size() - pos) return false;
      std::string name = str.substr(pos, len);
      pos += len;
      if (!get(&fam, 1) || !get(&hosts, 1) || !get(&count, 4) || (fam != 4 && fam != 6)) return false;
      Set& s = sets[name];
      s.family = fam == 4 ? Family::kV4 : Family::kV6;
      size_t each = hosts ? AddrLen(s.family) : sizeof(Interval);
      if (static_cast<uint64_t>(count) * each > str.size() - pos) return false;
      if (hosts) {
        s.intervals.reserve(count);
        for (uint32_t k = 0; k < count; ++k) {
          Addr a;
          std::memcpy(a.b.data(), str.data() + pos, each);
          pos += each;
          s.intervals.push_back(HostInterval(s.family, a));
        }
      } else {
        s.intervals.resize(count);
        if (!get(s.intervals.data(), count * sizeof(Interval))) return false;
      }
    }
    return pos == str.size();
  }
};

/// One record of a snapshot (format: see TakeSnapshot): a chain, set or rule message (its
/// attributes, `type` NFT_MSG_NEW*), or the elements of one set (`type` 0).
struct SnapshotRecord {
  uint16_t type = 0;
  std::string_view payload;
  std::string set;
  Family family = Family::kV4;
  SetSpec::Kind kind = SetSpec::Kind::kAllowHosts;
  std::vector<Interval> intervals;
};

/// Decodes a snapshot and its attachment (the element record it links) for restoring and for
/// describing a restore alike: `header` gets whether the table existed, then `each` every record
/// in order. The first error stops it.
Status DecodeSnapshot(const std::string& snap, const std::string& attachment, const std::function<void(bool table)>& header,
                      const std::function<Status(SnapshotRecord&)>& each) {
  if (snap.size() < 7 || snap.compare(0, 6, "MWSN2\n") != 0) return Status::Io("not a mailward nftables snapshot");
  header(snap[6] != 0);
  ElementCache attached;
  bool attached_ok = !attachment.empty() && attached.Parse(attachment);
  size_t pos = 7;
  while (pos < snap.size()) {
    if (pos + 6 > snap.size()) return Status::Io("truncated snapshot");
    uint16_t type;
    uint32_t len;
    std::memcpy(&type, snap.data() + pos, 2);
    std::memcpy(&len, snap.data() + pos + 2, 4);
    pos += 6;
    if (len > snap.size() - pos) return Status::Io("truncated snapshot");
    SnapshotRecord rec;
    if (type == kSnapIntervals || type == kSnapIntervalsRef) {
      if (len < 6) return Status::Io("truncated snapshot");
      rec.family = snap[pos] == 4 ? Family::kV4 : Family::kV6;
      rec.kind = static_cast<SetSpec::Kind>(snap[pos + 1]);
      if (rec.kind != SetSpec::Kind::kAllowHosts && rec.kind != SetSpec::Kind::kAllowNets)
        return Status::Io("corrupt snapshot");
      uint32_t nlen;
      std::memcpy(&nlen, snap.data() + pos + 2, 4);
      if (nlen > len - 6 || (len - 6 - nlen) % sizeof(Interval)) return Status::Io("corrupt snapshot");
      rec.set = snap.substr(pos + 6, nlen);
      if (type == kSnapIntervals) {
        rec.intervals.resize((len - 6 - nlen) / sizeof(Interval));
        std::memcpy(rec.intervals.data(), snap.data() + pos + 6 + nlen, rec.intervals.size() * sizeof(Interval));
      } else {
        if (!attached_ok) return Status::Io("the snapshot's element file is missing or corrupt");
        auto node = attached.sets.extract(rec.set);  // a set named twice finds nothing the second time
        if (!node) return Status::Io("the snapshot's element file lacks set " + rec.set);
        rec.intervals = std::move(node.mapped().intervals);
      }
    } else if (type == NFT_MSG_NEWCHAIN || type == NFT_MSG_NEWSET || type == NFT_MSG_NEWRULE) {
      rec.type = type;
      rec.payload = std::string_view(snap.data() + pos, len);
    } else {
      return Status::Io("snapshot holds an unexpected message type " + std::to_string(type));
    }
    pos += len;
    MW_RETURN_IF_ERROR(each(rec));
  }
  return Status::Ok();
}

/// Everything read from the kernel in one consistent generation.
struct LiveState {
  uint32_t generation = 0;
  LiveTable table;
  std::vector<RulePtr> rules;                   // owns every parsed rule
  std::vector<const nftnl_rule*> our_rules;      // mailward's chain, in order
  ChainPtr our_chain;
  std::vector<SetPtr> our_sets;
  /// Every chain of every active table, mailward's own included, for the reachability engine.
  std::vector<analysis::NftChainIn> all_chains;
  std::set<std::pair<uint32_t, std::string>> dormant_tables;
  bool elements_from_cache_file = false;  ///< allow-set contents equal the cache file's
  bool elements_from_cache = false;       ///< some allow-set contents came from a cache, not the kernel
  struct OtherSet {
    uint32_t key_len = 0;
    uint32_t flags = 0;
    uint32_t data_len = 0;
  };
  std::map<std::tuple<uint32_t, std::string, std::string>, OtherSet> other_sets;
};

class NftPlan : public BackendPlan {
 public:
  Plan plan;
  /// What the kernel gets: the caller's ruleset with its large host sets sharded.
  std::shared_ptr<const Ruleset> sharded;
  const Ruleset* desired = nullptr;  ///< == sharded.get()
  std::unique_ptr<LiveState> live;   ///< what the plan was made against
};

class NftBackend : public Backend {
 public:
  explicit NftBackend(const BackendConfig& cfg) : cfg_(cfg) {}
  std::string name() const override { return "nftables"; }

  Result<std::unique_ptr<BackendPlan>> Plan(const Ruleset& desired, const PlanOptions& opts) override {
    MW_RETURN_IF_ERROR(EnsureSocket());
    auto sharded = Sharded(desired, opts.verify_read_back);
    auto live = ReadLive(opts.verify_read_back ? sharded.get() : nullptr);
    if (!live.ok()) return live.status();
    return MakePlan(std::move(sharded), std::make_unique<LiveState>(std::move(live.value())), opts);
  }

  Status Apply(const BackendPlan& bplan) override {
    MW_RETURN_IF_ERROR(EnsureSocket());
    const auto& p = PlanAs<NftPlan>(bplan, "nftables");
    if (p.plan.empty()) {
      // In sync. Record the elements unless the record already says exactly this (a no-op apply,
      // as Ansible's second run, then writes nothing).
      if (p.sharded && (!p.live || !p.live->elements_from_cache_file)) RememberElements(p.sharded, p.generation - 1);
      return Status::Ok();
    }
    Status sent;
    {
      // The batch (16 bytes an address) is gone before the element record is made.
      Batch batch(p.generation);
      BuildBatch(p.plan, &batch);
      batch.End();
      sent = sock_->Send(batch);
    }
    if (!sent.ok()) {
      if (sent.code() != Code::kGenerationMoved && p.live && p.live->elements_from_cache) {
        // The plan trusted mailward's record of its sets and the kernel refused it: the record
        // may be stale. Drop it, so the next run reads the elements from the kernel.
        if (!cfg_.state_dir.empty()) (void)cfg_.env->RemoveFile(CachePath());
        last_written_.reset();
        return Status::Error(sent.code(), sent.message() +
                                              " (mailward's record of its sets' contents was used and is now dropped: "
                                              "run apply again to plan from the kernel's own state)");
      }
      return sent;
    }
    if (p.plan.delete_table) {  // removed: no record of sets that are gone
      if (!cfg_.state_dir.empty()) (void)cfg_.env->RemoveFile(CachePath());
      last_written_.reset();
    } else {
      if (p.sharded) RememberElements(p.sharded, p.generation);
    }
    // The integration tests' hook library may hold the process here, so a test can commit from
    // another process before this one reads back (MAILWARD_TEST_FAULT=pause-after-commit).
    if (!cfg_.state_dir.empty()) sys::AfterCommitHook(cfg_.state_dir);
    return Status::Ok();
  }

  Result<std::unique_ptr<BackendPlan>> PlanRemove(const PlanOptions& opts) override;
  Result<std::vector<Change>> PlanRestore(const std::string& snapshot, const std::string& attachment,
                                          const PlanOptions& opts) override;
  Result<mw::Snapshot> TakeSnapshot(const BackendPlan& plan) override;
  Status Restore(const std::string& snapshot, const std::string& attachment) override {
    return RestoreAt(snapshot, attachment, 0);
  }
  Status RestoreOwnCommit(const BackendPlan& applied, const std::string& snapshot,
                          const std::string& attachment) override;
  /// Restores a snapshot in one batch; with a generation, only if the ruleset is still at it.
  Status RestoreAt(const std::string& snapshot, const std::string& attachment, uint32_t generation);

  /// After a successful Apply of `plan` made against generation g: if the kernel is now at
  /// g+1, nobody else committed in between, and the allow sets hold exactly `desired`.
  void RememberElements(const std::shared_ptr<const Ruleset>& desired, uint32_t planned_generation);

 private:
  Status EnsureSocket() {
    if (sock_) return Status::Ok();
    auto s = OpenTransport(cfg_.nft_transport);
    if (!s.ok()) return s.status();
    sock_ = std::move(s.value());
    return Status::Ok();
  }
  std::string CachePath() const { return cfg_.state_dir + "/nft-elements.cache"; }
  /// The sharded form of `desired` (ShardHostSets). The verification read-back (`same`: the
  /// caller plans the very ruleset it just applied) reuses the last one, so a million
  /// addresses are sharded once; any other plan shards afresh (another ruleset may sit at the
  /// same address with the same shape).
  std::shared_ptr<const Ruleset> Sharded(const Ruleset& desired, bool same) {
    bool any = false;
    for (const auto& s : desired.sets) any |= s.spec.kind == SetSpec::Kind::kAllowHosts && ShardBits(s.intervals.size()) > 0;
    if (!any) return std::shared_ptr<const Ruleset>(&desired, [](const Ruleset*) {});  // the caller's, as it is
    // The same object with the same shape (its address alone could be a new ruleset's).
    std::vector<size_t> shape{desired.rules.size()};
    for (const auto& s : desired.sets) shape.push_back(s.intervals.size());
    if (!same || sharded_of_ != &desired || shape != sharded_shape_ || !sharded_) {
      sharded_.reset();
      sharded_ = std::make_shared<const Ruleset>(ShardHostSets(desired));
      sharded_of_ = &desired;
      sharded_shape_ = std::move(shape);
    }
    return sharded_;
  }
  const Ruleset* sharded_of_ = nullptr;
  std::vector<size_t> sharded_shape_;
  std::shared_ptr<const Ruleset> sharded_;
  /// `verifying`: the (sharded) ruleset this process just applied, for the verification
  /// read-back: its sets, where RememberElements recorded them as written, are taken as read.
  Result<LiveState> ReadLive(const Ruleset* verifying = nullptr);
  /// Takes (moves out) the cached sets it uses from *cache.
  Status ReadOnce(LiveState* st, ElementCache* cache, const Ruleset* verifying);
  /// What RememberElements last wrote, so a verification read-back needs no file.
  std::optional<ElementCache> last_written_;
  Result<std::unique_ptr<BackendPlan>> MakePlan(std::shared_ptr<const Ruleset> desired, std::unique_ptr<LiveState> live,
                                                const PlanOptions& opts);
  void BuildBatch(const mw::Plan& plan, Batch* batch);

  BackendConfig cfg_;
  std::unique_ptr<Transport> sock_;

 public:
  /// For a read by the reachability engine on another backend's host: mailward's own allow
  /// sets are not read (they are empty there; at a million entries the dump costs seconds).
  bool skip_own_elements_ = false;
};

Status NftBackend::ReadOnce(LiveState* st, ElementCache* cache, const Ruleset* verifying) {
  // Tables.
  bool have_table = false;
  uint64_t table_handle = 0;
  MW_RETURN_IF_ERROR(sock_->Request(
      [](char* buf, uint32_t seq) {
        return nftnl_table_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, NFPROTO_UNSPEC, NLM_F_DUMP, seq);
      },
      [&](const nlmsghdr* nlh) {
        nftnl_table* t = nftnl_table_alloc();
        if (nftnl_table_nlmsg_parse(nlh, t) == 0 && nftnl_table_is_set(t, NFTNL_TABLE_FLAGS) &&
            (nftnl_table_get_u32(t, NFTNL_TABLE_FLAGS) & NFT_TABLE_F_DORMANT))
          st->dormant_tables.insert({nftnl_table_get_u32(t, NFTNL_TABLE_FAMILY), nftnl_table_get_str(t, NFTNL_TABLE_NAME)});
        if (nftnl_table_get_u32(t, NFTNL_TABLE_FAMILY) == NFPROTO_INET &&
            std::strcmp(nftnl_table_get_str(t, NFTNL_TABLE_NAME), kTable) == 0) {
          have_table = true;
          table_handle = nftnl_table_get_u64(t, NFTNL_TABLE_HANDLE);
        }
        nftnl_table_free(t);
        return MNL_CB_OK;
      }));
  st->table.exists = have_table;
  st->table.handle = table_handle;

  // Chains.
  std::map<std::tuple<uint32_t, std::string, std::string>, size_t> analysis_index;
  MW_RETURN_IF_ERROR(sock_->Request(
      [](char* buf, uint32_t seq) {
        return nftnl_chain_nlmsg_build_hdr(buf, NFT_MSG_GETCHAIN, NFPROTO_UNSPEC, NLM_F_DUMP, seq);
      },
      [&](const nlmsghdr* nlh) {
        ChainPtr c(nftnl_chain_alloc());
        if (nftnl_chain_nlmsg_parse(nlh, c.get()) < 0) return MNL_CB_OK;
        uint32_t fam = nftnl_chain_get_u32(c.get(), NFTNL_CHAIN_FAMILY);
        std::string table = nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TABLE);
        std::string name = nftnl_chain_get_str(c.get(), NFTNL_CHAIN_NAME);
        bool base = nftnl_chain_is_set(c.get(), NFTNL_CHAIN_HOOKNUM);
        {
          analysis::NftChainIn in;
          in.family = fam;
          in.table = table;
          in.name = name;
          in.base = base;
          if (base) {
            in.hook = nftnl_chain_get_u32(c.get(), NFTNL_CHAIN_HOOKNUM);
            in.priority = nftnl_chain_get_s32(c.get(), NFTNL_CHAIN_PRIO);
            const char* type = nftnl_chain_is_set(c.get(), NFTNL_CHAIN_TYPE) ? nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TYPE) : "filter";
            in.type = type ? type : "filter";
            in.policy_drop = nftnl_chain_is_set(c.get(), NFTNL_CHAIN_POLICY) &&
                             nftnl_chain_get_u32(c.get(), NFTNL_CHAIN_POLICY) == NF_DROP;
            if (nftnl_chain_is_set(c.get(), NFTNL_CHAIN_DEV)) in.devices.push_back(nftnl_chain_get_str(c.get(), NFTNL_CHAIN_DEV));
            if (nftnl_chain_is_set(c.get(), NFTNL_CHAIN_DEVICES)) {
              const char** devs = static_cast<const char**>(const_cast<void*>(nftnl_chain_get(c.get(), NFTNL_CHAIN_DEVICES)));
              for (int i = 0; devs && devs[i]; ++i) in.devices.push_back(devs[i]);
            }
          }
          analysis_index[{fam, table, name}] = st->all_chains.size();
          st->all_chains.push_back(std::move(in));
        }
        if (fam == NFPROTO_INET && table == kTable) {
          if (name != kChain) {
            st->table.foreign.push_back("chain " + name);
            return MNL_CB_OK;
          }
          st->table.chain_exists = true;
          const char* type = nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TYPE);
          st->table.chain_ok = base && nftnl_chain_get_u32(c.get(), NFTNL_CHAIN_HOOKNUM) == NF_INET_PRE_ROUTING &&
                               static_cast<int32_t>(nftnl_chain_get_s32(c.get(), NFTNL_CHAIN_PRIO)) == kChainPriority &&
                               type && std::strcmp(type, "filter") == 0 &&
                               nftnl_chain_get_u32(c.get(), NFTNL_CHAIN_POLICY) == NF_ACCEPT;
          st->our_chain = std::move(c);
          return MNL_CB_OK;
        }
        return MNL_CB_OK;
      }));

  // Sets (their descriptions; elements only for mailward's own).
  MW_RETURN_IF_ERROR(sock_->Request(
      [](char* buf, uint32_t seq) {
        return nftnl_set_nlmsg_build_hdr(buf, NFT_MSG_GETSET, NFPROTO_UNSPEC, NLM_F_DUMP, seq);
      },
      [&](const nlmsghdr* nlh) {
        SetPtr s(nftnl_set_alloc());
        if (nftnl_set_nlmsg_parse(nlh, s.get()) < 0) return MNL_CB_OK;
        uint32_t fam = nftnl_set_get_u32(s.get(), NFTNL_SET_FAMILY);
        std::string table = nftnl_set_get_str(s.get(), NFTNL_SET_TABLE);
        if (fam == NFPROTO_INET && table == kTable) {
          LiveSet ls;
          ls.spec_known = ParseSetSpec(s.get(), &ls.spec);
          if (!ls.spec_known) ls.spec.name = nftnl_set_get_str(s.get(), NFTNL_SET_NAME);
          st->table.sets.push_back(ls);
          st->our_sets.push_back(std::move(s));
        } else {
          st->other_sets[{fam, table, nftnl_set_get_str(s.get(), NFTNL_SET_NAME)}] = {
              nftnl_set_get_u32(s.get(), NFTNL_SET_KEY_LEN), nftnl_set_get_u32(s.get(), NFTNL_SET_FLAGS),
              nftnl_set_is_set(s.get(), NFTNL_SET_DATA_LEN) ? nftnl_set_get_u32(s.get(), NFTNL_SET_DATA_LEN) : 0};
        }
        return MNL_CB_OK;
      }));

  // Rules of every table: ours to diff, the others for the conflict report.
  MW_RETURN_IF_ERROR(sock_->Request(
      [](char* buf, uint32_t seq) {
        return nftnl_rule_nlmsg_build_hdr(buf, NFT_MSG_GETRULE, NFPROTO_UNSPEC, NLM_F_DUMP, seq);
      },
      [&](const nlmsghdr* nlh) {
        RulePtr r(nftnl_rule_alloc());
        bool parsed = nftnl_rule_nlmsg_parse(nlh, r.get()) == 0;
        // A rule libnftnl cannot parse (an expression newer than it) still has its place.
        auto* nfg = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
        uint32_t fam = nfg->nfgen_family;
        const char* t = nftnl_rule_is_set(r.get(), NFTNL_RULE_TABLE) ? nftnl_rule_get_str(r.get(), NFTNL_RULE_TABLE) : "";
        const char* c = nftnl_rule_is_set(r.get(), NFTNL_RULE_CHAIN) ? nftnl_rule_get_str(r.get(), NFTNL_RULE_CHAIN) : "";
        if (auto ai = analysis_index.find({fam, t, c}); ai != analysis_index.end())
          st->all_chains[ai->second].rules.push_back(parsed ? r.get() : nullptr);
        if (fam == NFPROTO_INET && std::strcmp(t, kTable) == 0) {
          if (std::strcmp(c, kChain) != 0) {  // in a foreign chain, gone with it
            if (parsed) st->rules.push_back(std::move(r));
            return MNL_CB_OK;
          }
          LiveRule lr;
          lr.handle = nftnl_rule_get_u64(r.get(), NFTNL_RULE_HANDLE);
          if (parsed) {
            lr.key = RuleComment(r.get());
            lr.body = RenderBody(r.get());
            lr.text = analysis::NftRuleText(r.get());
          } else {
            lr.body = "(an expression this mailward cannot read)";
          }
          st->table.rules.push_back(lr);
          st->our_rules.push_back(r.get());
          st->rules.push_back(std::move(r));
          return MNL_CB_OK;
        }
        if (parsed) st->rules.push_back(std::move(r));
        return MNL_CB_OK;
      }));

  // Elements of mailward's allow sets: from our own last write when nobody touched the
  // ruleset since, else from the kernel.
  bool trust_cache = cache && have_table && cache->table_handle == table_handle &&
                     cache->generation == st->generation;
  for (auto& ls : st->table.sets) {
    if (!ls.spec_known || !ls.spec.is_allow() || skip_own_elements_) continue;
    if (trust_cache) {
      // From the in-memory record of this process's write: the verification of that very write
      // (the caller plans the ruleset it just applied, which is alive) takes the desired set's
      // own contents as read; any other read gets a copy of the backend's own sharded ruleset.
      const Ruleset* own = verifying && cache->written_of == verifying ? verifying : cache->written.get();
      const AddrSet* w = own ? own->FindSet(ls.spec.name) : nullptr;
      if (w && w->spec.family == ls.spec.family && w->spec.is_allow()) {
        if (own == verifying) ls.elements_as_desired = true;
        else ls.intervals = w->intervals;
        st->elements_from_cache = true;
        continue;
      }
      // From the element record (the file, or a caller's sets copied in memory).
      auto node = cache->sets.extract(ls.spec.name);
      if (node && node.mapped().family == ls.spec.family) {
        ls.intervals = std::move(node.mapped().intervals);
        st->elements_from_cache = true;
        continue;
      }
    }
    std::vector<RawElement> raw;
    Family fam = ls.spec.family;
    bool bad = false;
    std::string name = ls.spec.name;
    MW_RETURN_IF_ERROR(sock_->Request(
        [&](char* buf, uint32_t seq) {
          nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, seq);
          mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, kTable);
          mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, name.c_str());
          return nlh;
        },
        [&](const nlmsghdr* nlh) {
          if (!ParseElements(nlh, fam, &raw)) bad = true;
          return MNL_CB_OK;
        }));
    if (bad) return Status::Netlink("set " + name + ": malformed element dump");
    bool clean = true;
    ls.intervals = ElementsToIntervals(ls.spec.family, std::move(raw), ls.spec.kind, &clean);
    if (!clean) ls.spec_known = false;
  }
  return Status::Ok();
}

Result<LiveState> NftBackend::ReadLive(const Ruleset* verifying) {
  Phase phase("read live state");
  ElementCache cache;
  bool have_cache = false, from_file = false;
  if (last_written_) {
    cache = std::move(*last_written_);
    last_written_.reset();
    have_cache = true;
  } else if (!cfg_.state_dir.empty() && CheckTrusted(cfg_.state_dir, TrustedKind::kStateDir).ok()) {
    // The cache stands in for a read of the kernel's elements: only from a directory no one
    // but root can write.
    from_file = true;
    auto text = cfg_.env->ReadFile(CachePath(), Follow::kNoSymlinks);
    have_cache = text.ok() && cache.Parse(*text) && cache.identity == RuntimeIdentity(*cfg_.env);
  }
  for (int attempt = 0; attempt < kMaxReadAttempts; ++attempt) {
    auto g1 = sock_->GetGeneration();
    if (!g1.ok()) return g1.status();
    LiveState st;
    st.generation = *g1;
    Status s = ReadOnce(&st, have_cache ? &cache : nullptr, verifying);
    if (!s.ok() && s.code() != Code::kGenerationMoved) return s;
    auto g2 = sock_->GetGeneration();
    if (!g2.ok()) return g2.status();
    if (s.ok() && *g2 == *g1) {
      st.elements_from_cache_file = from_file && have_cache && st.table.exists &&
                                    cache.generation == st.generation && cache.table_handle == st.table.handle;
      return st;
    }
  }
  return Status::Netlink("the ruleset kept changing while it was read (" +
                         std::to_string(kMaxReadAttempts) + " attempts)");
}


std::string SetDetail(const SetSpec& s) {
  std::string t = s.family == Family::kV4 ? "type ipv4_addr" : "type ipv6_addr";
  if (s.kind == SetSpec::Kind::kAllowNets) return t + "; flags interval";
  if (s.kind == SetSpec::Kind::kAllowHosts) return t + "; size " + std::to_string(s.size);
  return t + "; flags dynamic,timeout; timeout " + std::to_string(s.timeout_ms / 1000) + "s; size " + std::to_string(s.size);
}

Result<std::unique_ptr<BackendPlan>> NftBackend::MakePlan(std::shared_ptr<const Ruleset> desired_ptr,
                                                          std::unique_ptr<LiveState> live_ptr,
                                                          const PlanOptions& opts) {
  const Ruleset& desired = *desired_ptr;
  LiveState& live = *live_ptr;
  std::vector<std::string> bodies;
  bodies.reserve(desired.rules.size());
  for (const auto& r : desired.rules) bodies.push_back(RenderBody(r));
  auto out = std::make_unique<NftPlan>();
  out->generation = live.generation;
  out->sharded = std::move(desired_ptr);
  out->desired = out->sharded.get();
  out->plan = Diff(desired, bodies, live.table);
  const mw::Plan& p = out->plan;

  // Element changes of a sharded set are shown as changes of the one set the policy names: the
  // count of all its shards, the first items in address order.
  auto elements_change = [&](ChangeOp op, const std::string& set, Family family,
                             const std::vector<const std::vector<Interval>*>& parts) {
    size_t total = 0;
    for (const auto* v : parts) total += v->size();
    if (total == 0) return;
    Change c{op, ChangeObject::kElements, set, "", total, {}};
    size_t n = opts.max_items == 0 ? total : std::min(total, opts.max_items);
    if (parts.size() == 1) {
      for (size_t i = 0; i < n; ++i) c.items.push_back(FormatInterval(family, (*parts[0])[i]));
    } else {
      std::vector<const Interval*> all;
      all.reserve(total);
      for (const auto* v : parts)
        for (const auto& iv : *v) all.push_back(&iv);
      auto less = [](const Interval* a, const Interval* b) { return *a < *b; };
      std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(n), all.end(), less);
      for (size_t i = 0; i < n; ++i) c.items.push_back(FormatInterval(family, *all[i]));
    }
    c.detail = std::to_string(total) + (total == 1 ? " entry" : " entries");
    out->changes.push_back(std::move(c));
  };
  if (!p.recreate_reason.empty())
    out->changes.push_back({ChangeOp::kReplace, ChangeObject::kTable, "inet mailward", p.recreate_reason, 1, {}});
  else if (p.create_table)
    out->changes.push_back({ChangeOp::kAdd, ChangeObject::kTable, "inet mailward", "", 1, {}});
  if (p.create_chain)
    out->changes.push_back({ChangeOp::kAdd, ChangeObject::kChain, kChain, "type filter hook prerouting priority mangle; policy accept", 1, {}});
  for (const auto& r : p.delete_rules)
    out->changes.push_back({ChangeOp::kDelete, ChangeObject::kRule, r.key.empty() ? "handle " + std::to_string(r.handle) : r.key,
                            r.text.empty() ? r.body : r.text, 1, {}});
  for (const auto& s : p.delete_sets) out->changes.push_back({ChangeOp::kDelete, ChangeObject::kSet, s, "", 1, {}});
  for (const auto& s : p.create_sets) out->changes.push_back({ChangeOp::kAdd, ChangeObject::kSet, s.name, SetDetail(s), 1, {}});
  std::vector<std::string> order;
  std::map<std::string, std::pair<Family, std::vector<const ElementChange*>>> by_base;
  for (const auto& ec : p.elements) {
    std::string base = ShardBaseName(ec.set);
    auto [it, fresh] = by_base.try_emplace(base, ec.family, std::vector<const ElementChange*>{});
    if (fresh) order.push_back(base);
    it->second.second.push_back(&ec);
  }
  for (const auto& base : order) {
    const auto& [family, ecs] = by_base[base];
    std::vector<const std::vector<Interval>*> removes, adds;
    for (const auto* ec : ecs) {
      if (!ec->remove.empty()) removes.push_back(&ec->remove);
      if (!ec->add.empty()) adds.push_back(&ec->add);
    }
    elements_change(ChangeOp::kDelete, base, family, removes);
    elements_change(ChangeOp::kAdd, base, family, adds);
  }
  for (const auto& r : p.add_rules) out->changes.push_back({ChangeOp::kAdd, ChangeObject::kRule, r.spec.key, r.spec.Describe(), 1, {}});

  out->live = std::move(live_ptr);
  return std::unique_ptr<BackendPlan>(std::move(out));
}

void AddElementMessages(Batch* batch, uint16_t type, const std::string& set, Family fam,
                        const std::vector<RawElement>& raw, const char* verb) {
  // As many elements a message as fit in one element list (its length has 16 bits): split by
  // bytes, since an IPv6 interval end takes 36 bytes and an IPv4 host 16.
  for (size_t i = 0; i < raw.size();) {
    nlmsghdr* nlh = batch->Add(type, NFPROTO_INET, type == NFT_MSG_NEWSETELEM ? NLM_F_CREATE : 0,
                               MaxElementMessageBytes(set) + 64, std::string(verb) + " elements of set " + set);
    i = PutElements(nlh, set, fam, raw, i, raw.size());
    batch->Commit(nlh);
  }
}

void AddTable(Batch* batch, uint16_t type, const char* what) {
  nftnl_table* t = nftnl_table_alloc();
  nftnl_table_set_str(t, NFTNL_TABLE_NAME, kTable);
  nlmsghdr* nlh = batch->Add(type, NFPROTO_INET, type == NFT_MSG_NEWTABLE ? NLM_F_CREATE : 0, 512, what);
  nftnl_table_nlmsg_build_payload(nlh, t);
  batch->Commit(nlh);
  nftnl_table_free(t);
}

void NftBackend::BuildBatch(const mw::Plan& p, Batch* batch) {
  if (p.delete_table) {
    AddTable(batch, NFT_MSG_DELTABLE, "delete table inet mailward");
    return;
  }
  if (!p.recreate_reason.empty()) {
    AddTable(batch, NFT_MSG_NEWTABLE, "add table inet mailward");
    AddTable(batch, NFT_MSG_DELTABLE, "delete table inet mailward");
  }
  if (p.create_table) AddTable(batch, NFT_MSG_NEWTABLE, "add table inet mailward");
  if (p.create_chain) {
    nftnl_chain* c = nftnl_chain_alloc();
    nftnl_chain_set_str(c, NFTNL_CHAIN_TABLE, kTable);
    nftnl_chain_set_str(c, NFTNL_CHAIN_NAME, kChain);
    nftnl_chain_set_u32(c, NFTNL_CHAIN_HOOKNUM, NF_INET_PRE_ROUTING);
    nftnl_chain_set_s32(c, NFTNL_CHAIN_PRIO, kChainPriority);
    nftnl_chain_set_str(c, NFTNL_CHAIN_TYPE, "filter");
    nftnl_chain_set_u32(c, NFTNL_CHAIN_POLICY, NF_ACCEPT);
    nlmsghdr* nlh = batch->Add(NFT_MSG_NEWCHAIN, NFPROTO_INET, NLM_F_CREATE, 1024, "add chain prerouting");
    nftnl_chain_nlmsg_build_payload(nlh, c);
    batch->Commit(nlh);
    nftnl_chain_free(c);
  }
  for (const auto& r : p.delete_rules) {
    nftnl_rule* rule = nftnl_rule_alloc();
    nftnl_rule_set_str(rule, NFTNL_RULE_TABLE, kTable);
    nftnl_rule_set_str(rule, NFTNL_RULE_CHAIN, kChain);
    nftnl_rule_set_u64(rule, NFTNL_RULE_HANDLE, r.handle);
    nlmsghdr* nlh = batch->Add(NFT_MSG_DELRULE, NFPROTO_INET, 0, 512,
                               "delete rule " + (r.key.empty() ? "handle " + std::to_string(r.handle) : r.key));
    nftnl_rule_nlmsg_build_payload(nlh, rule);
    batch->Commit(nlh);
    nftnl_rule_free(rule);
  }
  for (const auto& name : p.delete_sets) {
    nftnl_set* s = nftnl_set_alloc();
    nftnl_set_set_str(s, NFTNL_SET_TABLE, kTable);
    nftnl_set_set_str(s, NFTNL_SET_NAME, name.c_str());
    nlmsghdr* nlh = batch->Add(NFT_MSG_DELSET, NFPROTO_INET, 0, 512, "delete set " + name);
    nftnl_set_nlmsg_build_payload(nlh, s);
    batch->Commit(nlh);
    nftnl_set_free(s);
  }
  uint32_t set_id = 1;
  for (const auto& spec : p.create_sets) {
    SetPtr s = BuildSet(spec);
    nftnl_set_set_u32(s.get(), NFTNL_SET_ID, set_id++);
    nlmsghdr* nlh = batch->Add(NFT_MSG_NEWSET, NFPROTO_INET, NLM_F_CREATE | NLM_F_EXCL, 1024, "add set " + spec.name);
    nftnl_set_nlmsg_build_payload(nlh, s.get());
    batch->Commit(nlh);
  }
  // Test-only fault injection (the integration tests' hook library, MAILWARD_TEST_FAULT=
  // netlink-midbatch): a change the kernel must refuse, in the middle of the batch.
  if (sys::InjectedFault("netlink-midbatch")) {
    nftnl_rule* rule = nftnl_rule_alloc();
    nftnl_rule_set_str(rule, NFTNL_RULE_TABLE, kTable);
    nftnl_rule_set_str(rule, NFTNL_RULE_CHAIN, kChain);
    nftnl_rule_set_u64(rule, NFTNL_RULE_HANDLE, 0x7fffffff);
    nlmsghdr* nlh = batch->Add(NFT_MSG_DELRULE, NFPROTO_INET, 0, 512, "injected fault: delete a rule that does not exist");
    nftnl_rule_nlmsg_build_payload(nlh, rule);
    batch->Commit(nlh);
    nftnl_rule_free(rule);
  }
  // Removals before additions: an interval that is replaced by a wider one shares its start.
  size_t element_bytes = 0;
  for (const auto& ec : p.elements) {
    size_t each = ec.kind == SetSpec::Kind::kAllowHosts ? ElementBytes(ec.family, false)
                                                        : ElementBytes(ec.family, false) + ElementBytes(ec.family, true);
    size_t n = ec.add.size() + ec.remove.size();
    element_bytes += n * each + (n * each / kMaxAttrLen + 2) * (MaxElementMessageBytes(ec.set) - kMaxAttrLen + 64);
  }
  batch->Reserve(element_bytes);
  for (const auto& ec : p.elements)
    if (!ec.remove.empty())
      AddElementMessages(batch, NFT_MSG_DELSETELEM, ec.set, ec.family, IntervalsToElements(ec.remove, ec.kind), "delete");
  for (const auto& ec : p.elements)
    if (!ec.add.empty())
      AddElementMessages(batch, NFT_MSG_NEWSETELEM, ec.set, ec.family, IntervalsToElements(ec.add, ec.kind), "add");
  for (const auto& ra : p.add_rules) {
    RulePtr r = BuildRule(ra.spec);
    uint16_t flags = NLM_F_CREATE;
    if (ra.before_handle) nftnl_rule_set_u64(r.get(), NFTNL_RULE_POSITION, *ra.before_handle);
    else flags |= NLM_F_APPEND;
    nlmsghdr* nlh = batch->Add(NFT_MSG_NEWRULE, NFPROTO_INET, flags, 8192, "add rule " + ra.spec.key);
    nftnl_rule_nlmsg_build_payload(nlh, r.get());
    batch->Commit(nlh);
  }
}

void NftBackend::RememberElements(const std::shared_ptr<const Ruleset>& desired_ptr, uint32_t planned_generation) {
  const Ruleset& desired = *desired_ptr;
  Phase phase("remember elements");
  if (cfg_.state_dir.empty()) return;
  auto gen = sock_->GetGeneration();
  std::string path = CachePath();
  // Only when our commit is the one and only since the plan's read.
  bool ours = gen.ok() && *gen == planned_generation + 1;
  uint64_t handle = 0;
  bool have_table = false;
  if (ours) {
    Status s = sock_->Request(
        [](char* buf, uint32_t seq) {
          nlmsghdr* nlh = nftnl_table_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, NFPROTO_INET, NLM_F_ACK, seq);
          mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, kTable);
          return nlh;
        },
        [&](const nlmsghdr* nlh) {
          nftnl_table* t = nftnl_table_alloc();
          if (nftnl_table_nlmsg_parse(nlh, t) == 0) {
            handle = nftnl_table_get_u64(t, NFTNL_TABLE_HANDLE);
            have_table = true;
          }
          nftnl_table_free(t);
          return MNL_CB_OK;
        });
    auto gen2 = sock_->GetGeneration();
    ours = s.ok() && have_table && gen2.ok() && *gen2 == *gen;
  }
  if (!ours) {
    (void)cfg_.env->RemoveFile(path);
    last_written_.reset();
    return;
  }
  ElementCache c;
  c.identity = RuntimeIdentity(*cfg_.env);
  c.generation = *gen;
  c.table_handle = handle;
  std::vector<ElementCache::View> views;
  for (const auto& s : desired.sets)
    if (s.spec.is_allow()) views.push_back({&s.spec.name, s.spec.family, &s.intervals});
  // A cache, not a record: losing it costs one full read, so no fsync.
  if (MakeDirs(cfg_.state_dir).ok() && CheckTrusted(cfg_.state_dir, TrustedKind::kStateDir).ok())
    (void)cfg_.env->WriteFileAtomic(path, c.Serialize(views), Durability::kNoFsync);
  // The in-memory record: the backend's own sharded ruleset is held, not copied; a caller's
  // ruleset may not outlive this backend, so its sets are copied (as they always were).
  c.written_of = desired_ptr.get();
  if (desired_ptr == sharded_) {
    c.written = desired_ptr;
  } else {
    for (const auto& s : desired.sets)
      if (s.spec.is_allow()) c.sets[s.spec.name] = ElementCache::Set{s.spec.family, s.intervals};
  }
  last_written_ = std::move(c);
}

// Snapshot format: "MWSN2\n", u8 table-exists, then messages: u16 type, u32 len, payload
// (the attributes after nfgenmsg), rebuilt into a batch by Restore.
Result<mw::Snapshot> NftBackend::TakeSnapshot(const BackendPlan& bplan) {
  const auto& np = PlanAs<NftPlan>(bplan, "nftables");
  LiveState* live = np.live.get();
  if (!live) return Status::Error(Code::kInternal, "snapshot of a plan without its live state");
  mw::Snapshot snap;
  // The allow sets are exactly what the cache file says: link it rather than copy 100,000
  // addresses (RememberElements replaces the cache by rename, so the link keeps this version).
  bool by_ref = live->elements_from_cache_file;
  if (by_ref) snap.attachment_path = CachePath();
  std::string& out = snap.bytes;
  out = "MWSN2\n";
  out.push_back(live->table.exists ? 1 : 0);
  // One chain, set or rule message at a time: each is well under 64 KB (a rule's expressions
  // are one attribute with a 16-bit length); elements are written raw, not as messages.
  std::vector<char> buf(1 << 17);
  auto put_msg = [&](nlmsghdr* nlh) {
    uint16_t type = nlh->nlmsg_type & 0xff;
    uint32_t len = nlh->nlmsg_len - NLMSG_HDRLEN - sizeof(nfgenmsg);
    out.append(reinterpret_cast<const char*>(&type), 2);
    out.append(reinterpret_cast<const char*>(&len), 4);
    out.append(static_cast<const char*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg))), len);
  };
  if (live->table.exists) {
    if (live->our_chain) {
      nftnl_chain_unset(live->our_chain.get(), NFTNL_CHAIN_HANDLE);
      nftnl_chain_unset(live->our_chain.get(), NFTNL_CHAIN_USE);
      nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_NEWCHAIN, NFPROTO_INET, 0, 0);
      nftnl_chain_nlmsg_build_payload(nlh, live->our_chain.get());
      put_msg(nlh);
    }
    uint32_t set_id = 1;
    for (auto& s : live->our_sets) {
      nftnl_set_unset(s.get(), NFTNL_SET_HANDLE);
      nftnl_set_set_u32(s.get(), NFTNL_SET_ID, set_id++);  // the kernel requires one on NEWSET
      nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_NEWSET, NFPROTO_INET, 0, 0);
      nftnl_set_nlmsg_build_payload(nlh, s.get());
      put_msg(nlh);
      std::string name = nftnl_set_get_str(s.get(), NFTNL_SET_NAME);
      const LiveSet* ls = nullptr;
      for (const auto& x : live->table.sets)
        if (x.spec.name == name && x.spec_known && x.spec.is_allow()) ls = &x;
      if (!ls) continue;
      const std::vector<Interval>* ivs = &ls->intervals;
      if (ls->elements_as_desired) {  // read as this process wrote them: the plan's own sets
        const AddrSet* d = np.desired ? np.desired->FindSet(name) : nullptr;
        if (!d) return Status::Error(Code::kInternal, "snapshot: set " + name + " read as written, but not planned");
        ivs = &d->intervals;
      }
      if (ivs->empty()) continue;
      // Elements as a raw interval array (type kSnapIntervals): a memcpy, not 100,000 attributes;
      // or, when they are the attachment's, only the set's name (kSnapIntervalsRef).
      uint16_t type = by_ref ? kSnapIntervalsRef : kSnapIntervals;
      size_t payload = by_ref ? 0 : ivs->size() * sizeof(Interval);
      uint32_t len = static_cast<uint32_t>(2 + 4 + name.size() + payload);
      out.append(reinterpret_cast<const char*>(&type), 2);
      out.append(reinterpret_cast<const char*>(&len), 4);
      out.push_back(ls->spec.family == Family::kV4 ? 4 : 6);
      out.push_back(static_cast<char>(ls->spec.kind));
      uint32_t nlen = static_cast<uint32_t>(name.size());
      out.append(reinterpret_cast<const char*>(&nlen), 4);
      out.append(name);
      out.append(reinterpret_cast<const char*>(ivs->data()), payload);
    }
    for (const nftnl_rule* cr : live->our_rules) {
      auto* r = const_cast<nftnl_rule*>(cr);
      nftnl_rule_unset(r, NFTNL_RULE_HANDLE);
      nftnl_rule_unset(r, NFTNL_RULE_POSITION);
      nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_NEWRULE, NFPROTO_INET, 0, 0);
      nftnl_rule_nlmsg_build_payload(nlh, r);
      put_msg(nlh);
    }
  }
  return snap;
}

Status NftBackend::RestoreOwnCommit(const BackendPlan& applied, const std::string& snap, const std::string& attachment) {
  MW_RETURN_IF_ERROR(EnsureSocket());
  // Our batch carried the generation it was planned at, so it made exactly that + 1. Anything
  // else now: someone committed after us, and restoring would undo their change too.
  auto gen = sock_->GetGeneration();
  if (!gen.ok()) return gen.status();
  uint32_t ours = applied.generation + 1;
  if (*gen != ours)
    return Status::Error(Code::kGenerationMoved,
                         "another process committed to the ruleset after this apply (generation " + std::to_string(*gen) +
                             ", this apply made " + std::to_string(ours) +
                             "), so the read-back may show its change; not rolled back, to leave that change alone: "
                             "run 'mailward check' (and 'mailward rollback' if this apply must go)");
  // And the restore itself is refused if anyone commits between this check and it.
  Status s = RestoreAt(snap, attachment, ours);
  if (s.code() == Code::kGenerationMoved)
    return Status::Error(Code::kGenerationMoved,
                         "another process committed to the ruleset just now; not rolled back, to leave its change alone: "
                         "run 'mailward check' (and 'mailward rollback' if this apply must go)");
  return s;
}

Status NftBackend::RestoreAt(const std::string& snap, const std::string& attachment, uint32_t generation) {
  MW_RETURN_IF_ERROR(EnsureSocket());
  Batch batch(generation);
  auto header = [&](bool table) {
    // Whatever is there goes (created first so the delete cannot fail), then the snapshot's.
    AddTable(&batch, NFT_MSG_NEWTABLE, "add table inet mailward");
    AddTable(&batch, NFT_MSG_DELTABLE, "delete table inet mailward");
    if (table) AddTable(&batch, NFT_MSG_NEWTABLE, "add table inet mailward");
  };
  MW_RETURN_IF_ERROR(DecodeSnapshot(snap, attachment, header, [&](SnapshotRecord& rec) {
    if (rec.type == 0) {
      AddElementMessages(&batch, NFT_MSG_NEWSETELEM, rec.set, rec.family, IntervalsToElements(rec.intervals, rec.kind),
                         "restore");
      return Status::Ok();
    }
    const uint32_t len = static_cast<uint32_t>(rec.payload.size());
    uint16_t flags = NLM_F_CREATE | (rec.type == NFT_MSG_NEWRULE ? NLM_F_APPEND : 0);
    nlmsghdr* nlh = batch.Add(rec.type, NFPROTO_INET, flags, len + 64, "restore snapshot");
    std::memcpy(mnl_nlmsg_get_payload_tail(nlh), rec.payload.data(), len);
    nlh->nlmsg_len += MNL_ALIGN(len);
    batch.Commit(nlh);
    return Status::Ok();
  }));
  batch.End();
  MW_RETURN_IF_ERROR(sock_->Send(batch));
  if (!cfg_.state_dir.empty()) (void)cfg_.env->RemoveFile(CachePath());
  last_written_.reset();
  return Status::Ok();
}

Result<std::unique_ptr<BackendPlan>> NftBackend::PlanRemove(const PlanOptions&) {
  MW_RETURN_IF_ERROR(EnsureSocket());
  auto live = ReadLive();
  if (!live.ok()) return live.status();
  static const Ruleset kNothing;
  auto out = std::make_unique<NftPlan>();
  out->generation = live->generation;
  out->sharded = std::shared_ptr<const Ruleset>(&kNothing, [](const Ruleset*) {});
  out->desired = &kNothing;
  if (live->table.exists) {
    out->plan.delete_table = true;
    size_t entries = 0;
    for (const auto& ls : live->table.sets) entries += ls.intervals.size();
    out->changes.push_back({ChangeOp::kDelete, ChangeObject::kTable, "inet mailward",
                            Plural(live->table.rules.size(), "rule") + ", " + Plural(live->table.sets.size(), "set") +
                                " holding " + Plural(entries, "allowlist entry", "allowlist entries"),
                            1, {}});
  }
  out->live = std::make_unique<LiveState>(std::move(live.value()));
  return std::unique_ptr<BackendPlan>(std::move(out));
}

Result<std::vector<Change>> NftBackend::PlanRestore(const std::string& snap, const std::string& attachment,
                                                    const PlanOptions& opts) {
  MW_RETURN_IF_ERROR(EnsureSocket());
  // The snapshot, read into the shape of a live table.
  LiveTable then;
  auto set_named = [&](const std::string& name) -> LiveSet& {
    for (auto& ls : then.sets)
      if (ls.spec.name == name) return ls;
    then.sets.emplace_back();
    then.sets.back().spec.name = name;
    return then.sets.back();
  };
  std::vector<char> buf(1 << 16);
  auto header = [&](bool table) { then.exists = table; };
  MW_RETURN_IF_ERROR(DecodeSnapshot(snap, attachment, header, [&](SnapshotRecord& rec) {
    if (rec.type == 0) {
      LiveSet& ls = set_named(rec.set);
      ls.spec.family = rec.family;
      ls.spec.kind = rec.kind;
      ls.intervals = std::move(rec.intervals);
      return Status::Ok();
    }
    const uint32_t len = static_cast<uint32_t>(rec.payload.size());
    if (len + 256 > buf.size()) buf.resize(len + 256);
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), rec.type, NFPROTO_INET, 0, 0);
    std::memcpy(mnl_nlmsg_get_payload_tail(nlh), rec.payload.data(), len);
    nlh->nlmsg_len += MNL_ALIGN(len);
    if (rec.type == NFT_MSG_NEWCHAIN) {
      then.chain_exists = true;
    } else if (rec.type == NFT_MSG_NEWSET) {
      SetPtr st(nftnl_set_alloc());
      if (nftnl_set_nlmsg_parse(nlh, st.get()) < 0) return Status::Io("corrupt snapshot: a set");
      set_named(nftnl_set_get_str(st.get(), NFTNL_SET_NAME));
    } else {
      RulePtr r(nftnl_rule_alloc());
      if (nftnl_rule_nlmsg_parse(nlh, r.get()) < 0) return Status::Io("corrupt snapshot: a rule");
      LiveRule lr;
      lr.key = RuleComment(r.get());
      lr.text = analysis::NftRuleText(r.get());
      then.rules.push_back(std::move(lr));
    }
    return Status::Ok();
  }));
  auto live = ReadLive();
  if (!live.ok()) return live.status();
  return DescribeTableRestore(live->table, then, opts);
}

}  // namespace
}  // namespace nft

std::unique_ptr<Backend> MakeNftablesBackend(const BackendConfig& cfg) {
  return std::make_unique<nft::NftBackend>(cfg);
}


}  // namespace mw

namespace mw {
namespace nft {
namespace {

/// Named sets of the live ruleset for the engine: mailward's own from what was read (or the
/// desired content), the others' elements dumped on first use.
class LiveNftSets : public analysis::NftSets {
 public:
  struct Own {
    Family family;
    SetSpec::Kind kind;
    /// The desired ruleset's or the live state's (both outlive the topology): a million
    /// addresses are not copied.
    const std::vector<Interval>* intervals;
  };
  explicit LiveNftSets(TransportFactory transport) : transport_(std::move(transport)) {}
  std::map<std::string, Own> own;
  std::map<std::tuple<uint32_t, std::string, std::string>, LiveState::OtherSet> other;

  uint32_t KeyLen(uint32_t family, const std::string& table, const std::string& set) override {
    if (family == NFPROTO_INET && table == kTable) {
      auto it = own.find(set);
      return it == own.end() ? 0 : static_cast<uint32_t>(AddrLen(it->second.family));
    }
    auto it = other.find({family, table, set});
    return it == other.end() ? 0 : it->second.key_len;
  }

  std::optional<analysis::SetHit> Lookup(uint32_t family, const std::string& table, const std::string& set,
                                         const std::vector<uint8_t>& key) override {
    analysis::SetHit hit;
    if (family == NFPROTO_INET && table == kTable) {
      auto it = own.find(set);
      if (it == own.end() || it->second.kind == SetSpec::Kind::kMeter) return hit;  // a meter: no entry yet
      Addr a{};
      std::memcpy(a.b.data(), key.data(), std::min<size_t>(key.size(), 16));
      // Sorted and disjoint: the last interval starting at or below the address.
      const auto& ivs = *it->second.intervals;
      auto up = std::upper_bound(ivs.begin(), ivs.end(), a, [](const Addr& x, const Interval& iv) { return x < iv.start; });
      if (up != ivs.begin() && (std::prev(up)->to_max || a < std::prev(up)->end)) hit.found = true;
      return hit;
    }
    auto info = other.find({family, table, set});
    if (info == other.end()) return std::nullopt;
    const auto* elems = Elements(family, table, set);
    if (!elems) return std::nullopt;
    uint32_t flags = info->second.flags;
    if (!(flags & NFT_SET_INTERVAL)) {
      for (const auto& e : *elems)
        if (e.key == key) return Hit(e);
      return hit;
    }
    if (flags & NFT_SET_CONCAT) {
      // Concatenated ranges (pipapo): each element holds its start and end.
      for (const auto& e : *elems)
        if (!e.key_end.empty() && e.key <= key && key <= e.key_end) return Hit(e);
      return hit;
    }
    // Interval set: inside when the closest element at or below the key is a start.
    const Elem* best = nullptr;
    for (const auto& e : *elems)
      if (e.key <= key && (!best || e.key > best->key || (e.key == best->key && !e.end))) best = &e;
    if (best && !best->end) return Hit(*best);
    return hit;
  }

 private:
  struct Elem {
    std::vector<uint8_t> key, key_end, data;
    bool end = false;
    std::optional<int32_t> verdict;
    std::string chain;
  };
  static analysis::SetHit Hit(const Elem& e) {
    analysis::SetHit h;
    h.found = true;
    h.data = e.data;
    h.verdict = e.verdict;
    h.chain = e.chain;
    return h;
  }
  const std::vector<Elem>* Elements(uint32_t family, const std::string& table, const std::string& set) {
    auto k = std::make_tuple(family, table, set);
    if (auto it = cache_.find(k); it != cache_.end()) return it->second ? &*it->second : nullptr;
    if (!sock_) {
      auto s = OpenTransport(transport_);
      if (!s.ok()) return nullptr;
      sock_ = std::move(s.value());
    }
    std::vector<Elem> out;
    Status st = sock_->Request(
        [&](char* buf, uint32_t seq) {
          nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSETELEM, family, NLM_F_DUMP, seq);
          mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, table.c_str());
          mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, set.c_str());
          return nlh;
        },
        [&](const nlmsghdr* nlh) {
          nftnl_set* s = nftnl_set_alloc();
          if (nftnl_set_elems_nlmsg_parse(nlh, s) == 0) {
            nftnl_set_elems_iter* iter = nftnl_set_elems_iter_create(s);
            while (nftnl_set_elem* e = nftnl_set_elems_iter_next(iter)) {
              Elem el;
              auto bytes = [&](uint16_t attr) {
                uint32_t len = 0;
                if (!nftnl_set_elem_is_set(e, attr)) return std::vector<uint8_t>();
                auto* p = static_cast<const uint8_t*>(nftnl_set_elem_get(e, attr, &len));
                return p ? std::vector<uint8_t>(p, p + len) : std::vector<uint8_t>();
              };
              el.key = bytes(NFTNL_SET_ELEM_KEY);
              el.key_end = bytes(NFTNL_SET_ELEM_KEY_END);
              el.data = bytes(NFTNL_SET_ELEM_DATA);
              el.end = nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_FLAGS) &&
                       (nftnl_set_elem_get_u32(e, NFTNL_SET_ELEM_FLAGS) & NFT_SET_ELEM_INTERVAL_END);
              if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_VERDICT))
                el.verdict = static_cast<int32_t>(nftnl_set_elem_get_u32(e, NFTNL_SET_ELEM_VERDICT));
              if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_CHAIN)) el.chain = nftnl_set_elem_get_str(e, NFTNL_SET_ELEM_CHAIN);
              out.push_back(std::move(el));
            }
            nftnl_set_elems_iter_destroy(iter);
          }
          nftnl_set_free(s);
          return MNL_CB_OK;
        });
    if (!st.ok()) {
      cache_[k] = std::nullopt;
      return nullptr;
    }
    cache_[k] = std::move(out);
    return &*cache_[k];
  }
  TransportFactory transport_;
  std::unique_ptr<Transport> sock_;
  std::map<std::tuple<uint32_t, std::string, std::string>, std::optional<std::vector<Elem>>> cache_;
};

/// Keeps the parsed rules alive as long as the topology that points at them.
struct NftKeepAlive {
  LiveState live;
  std::vector<RulePtr> desired_rules;
};

}  // namespace
}  // namespace nft

Status AddNftablesToTopology(const BackendConfig& cfg, const BackendPlan* plan, const Ruleset* desired, bool read_own_elements,
                             const std::set<std::pair<uint32_t, std::string>>& skip, analysis::Topology* topo,
                             std::vector<std::shared_ptr<void>>* keep) {
  using namespace nft;
  // The nftables backend's own plan already holds the live ruleset (one consistent read);
  // otherwise read it here, without mailward's allow-set elements.
  auto ka = std::make_shared<NftKeepAlive>();
  const LiveState* livep = nullptr;
  const Ruleset* planned = nullptr;  // the plan's desired: the contents of sets read "as desired"
  if (auto* np = dynamic_cast<const NftPlan*>(plan); np && np->live) {
    livep = np->live.get();
    planned = np->desired;
  } else {
    BackendConfig read_cfg;  // no state directory: reads only
    read_cfg.env = cfg.env;
    read_cfg.nft_transport = cfg.nft_transport;
    NftBackend be(read_cfg);
    be.skip_own_elements_ = !read_own_elements;
    auto fresh = be.Plan(Ruleset{}, PlanOptions{false, 0});
    if (!fresh.ok()) return fresh.status();
    auto* fp = static_cast<NftPlan*>(fresh->get());
    ka->live = std::move(*fp->live);
    livep = &ka->live;
  }
  const LiveState& live = *livep;
  auto sets = std::make_shared<LiveNftSets>(cfg.nft_transport);
  sets->other = live.other_sets;
  std::vector<analysis::NftChainIn> chains;
  for (const auto& c : live.all_chains) {
    if (live.dormant_tables.count({c.family, c.table})) continue;
    if (skip.count({c.family, c.table})) continue;
    if (desired && c.family == NFPROTO_INET && c.table == kTable) continue;
    chains.push_back(c);
  }
  if (desired) {
    analysis::NftChainIn own;
    own.family = NFPROTO_INET;
    own.table = kTable;
    own.name = kChain;
    own.base = true;
    own.hook = NF_INET_PRE_ROUTING;
    own.priority = kChainPriority;
    for (const auto& r : desired->rules) {
      ka->desired_rules.push_back(BuildRule(r));
      own.rules.push_back(ka->desired_rules.back().get());
    }
    chains.push_back(std::move(own));
    for (const auto& set : desired->sets)
      sets->own[set.spec.name] = {set.spec.family, set.spec.kind, &set.intervals};
  } else {
    for (const auto& ls : live.table.sets) {
      const AddrSet* d = ls.elements_as_desired && planned ? planned->FindSet(ls.spec.name) : nullptr;
      sets->own[ls.spec.name] = {ls.spec.family, ls.spec.kind, d ? &d->intervals : &ls.intervals};
    }
  }
  analysis::AddNftTables(chains, sets, topo);
  keep->push_back(ka);
  keep->push_back(sets);
  return Status::Ok();
}

}  // namespace mw
