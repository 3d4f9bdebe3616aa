#include "plh/core/config.hpp"

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>

#include "plh/core/error.hpp"

namespace plh::cli {

namespace {

constexpr std::array<std::string_view, 7> kTools{"plh-broker", "plh-pub", "plh-sub", "plh-shm",
                                                 "plh-ctl",    "plh-req", "plh-rep"};

bool is_tool(std::string_view name) { return std::find(kTools.begin(), kTools.end(), name) != kTools.end(); }

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

bool readable_file(const std::string& path) {
  std::ifstream in(path);
  return in.good();
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (const auto& p : parts) {
    if (!out.empty()) out += sep;
    out += p;
  }
  return out;
}

// Specificity within one file and layer: a subcommand's section, the tool's, the top.
int specificity(const ConfigEntry& e) {
  if (!e.subcommands.empty()) return 0;
  return e.tool.empty() ? 2 : 1;
}

// Keys that are not options from a file: what selects the file itself, and the actions.
bool never_from_file(std::string_view key) {
  return key == "config" || key == "profile" || key == "help" || key == "h" || key == "version" ||
         key == "help-all" || key == "completion";
}

}  // namespace

std::string ConfigEntry::section() const {
  std::vector<std::string> parts;
  if (!profile.empty()) parts = {"profile", profile};
  if (!tool.empty()) parts.push_back(tool);
  parts.insert(parts.end(), subcommands.begin(), subcommands.end());
  return parts.empty() ? "top" : "[" + join(parts, ".") + "]";
}

namespace {
// "defaults file 'F', [plh-sub]: " — the start of an error about an entry.
std::string where(const ConfigEntry& e) {
  const std::string section = e.section();
  return "defaults file '" + e.file + "'" + (section == "top" ? "" : ", " + section) + ": ";
}
}  // namespace

std::vector<std::string> default_config_paths() {
  const char* home = std::getenv("HOME");
  const std::string user_dir = env_or("XDG_CONFIG_HOME", std::string(home && *home ? home : "") + "/.config");
  return {user_dir + "/plh/config", env_or("PLH_SYSTEM_CONFIG", "/etc/plh/config")};
}

std::vector<std::string> config_files(const std::string& explicit_file) {
  if (!explicit_file.empty()) return {explicit_file};
  std::vector<std::string> out;
  for (const auto& p : default_config_paths())
    if (readable_file(p)) out.push_back(p);
  return out;
}

std::string resolve_profile(const std::string& option) {
  if (!option.empty()) return option;
  return env_or("PLH_PROFILE", "");
}

const char* environment_for_key(std::string_view key) {
  if (key == "broker") return "PLH_BROKER";
  if (key == "broker-key") return "PLH_BROKER_KEY";
  if (key == "client-key") return "PLH_CLIENT_KEY";
  if (key == "advertise") return "PLH_ADVERTISE";
  if (key == "admin-token-file") return "PLH_ADMIN_TOKEN";
  return nullptr;
}

std::vector<ConfigEntry> read_config(const std::vector<std::string>& files, const std::string& profile,
                                     std::string_view tool) {
  CLI::ConfigBase parser;
  std::vector<ConfigEntry> entries;
  bool profile_seen = false;
  for (const auto& file : files) {
    std::ifstream in(file);
    if (!in) throw UsageError("cannot read defaults file '" + file + "'");
    std::vector<CLI::ConfigItem> items;
    try {
      items = parser.from_config(in);
    } catch (const CLI::Error& e) {
      throw UsageError("defaults file '" + file + "': " + e.what());
    }
    for (const auto& item : items) {
      if (item.name == "++" || item.name == "--") {  // CLI11's section markers: an empty profile exists too
        if (item.parents.size() >= 2 && item.parents[0] == "profile" && item.parents[1] == profile) profile_seen = true;
        continue;
      }
      ConfigEntry e;
      e.file = file;
      e.key = item.name;
      e.values = item.inputs;
      std::vector<std::string> path = item.parents;
      if (!path.empty() && path[0] == "profile") {
        if (path.size() < 2)
          throw UsageError("defaults file '" + file + "': '" + item.fullname() +
                           "': a profile is a section [profile.NAME]");
        e.profile = path[1];
        path.erase(path.begin(), path.begin() + 2);
        if (e.profile == profile) profile_seen = true;
      }
      if (!path.empty()) {
        if (!is_tool(path[0]))
          throw UsageError("defaults file '" + file + "': unknown section [" + join(item.parents, ".") +
                           "]: sections are plh tools (" + join({kTools.begin(), kTools.end()}, ", ") +
                           "), profile.NAME or profile.NAME.TOOL");
        e.tool = path[0];
        e.subcommands.assign(path.begin() + 1, path.end());
      }
      if (never_from_file(e.key)) throw UsageError(where(e) + "'" + e.key + "' cannot be set in a defaults file");
      if (!e.profile.empty() && e.profile != profile) continue;
      if (!tool.empty() && !e.tool.empty() && e.tool != tool) continue;
      entries.push_back(std::move(e));
    }
  }
  if (!profile.empty() && !profile_seen)
    throw UsageError("no profile '" + profile + "' in " +
                     (files.empty() ? "any defaults file (" + join(default_config_paths(), ", ") + ")"
                                    : join(files, ", ")) +
                     ": define it as a section [profile." + profile + "]");
  // Precedence order; stable, so a file's order is kept among equals.
  auto rank_of = [&](const std::string& f) {
    return static_cast<std::size_t>(std::find(files.begin(), files.end(), f) - files.begin());
  };
  std::stable_sort(entries.begin(), entries.end(), [&](const ConfigEntry& a, const ConfigEntry& b) {
    const auto ka = std::make_tuple(a.profile.empty(), rank_of(a.file), specificity(a));
    const auto kb = std::make_tuple(b.profile.empty(), rank_of(b.file), specificity(b));
    return ka < kb;
  });
  return entries;
}

namespace {

CLI::Option* find_option(CLI::App& app, const std::string& key) {
  CLI::Option* op = app.get_option_no_throw("--" + key);
  if (!op && key.size() == 1) op = app.get_option_no_throw("-" + key);
  return op;
}

std::string given_profile(const CLI::App& app) {
  const CLI::Option* opt = app.get_option_no_throw("--profile");
  return opt && opt->count() > 0 ? opt->results().front() : std::string();
}

// CLI11's config stage, fed from the layered files instead of one stream: each entry
// becomes a ConfigItem addressed to the app or to the subcommand that has the option.
// CLI11 sets an option from a config item only when the command line did not, and the
// first item wins, so the order of read_config is the precedence.
class LayeredConfig final : public CLI::ConfigBase {
 public:
  LayeredConfig(CLI::App& app, std::string tool) : app_(app), tool_(std::move(tool)) {}

  std::vector<CLI::ConfigItem> from_config(std::istream&) const override {
    // Called before CLI11 records its default file as the option's result: a result now
    // is a --config the user gave.
    const CLI::Option* config = app_.get_config_ptr();
    explicit_file_ = config && config->count() > 0 ? config->results().front() : std::string();
    ran_ = true;
    std::vector<CLI::ConfigItem> out;
    for (const auto& e : read_config(config_files(explicit_file_), resolve_profile(given_profile(app_)), tool_)) {
      if (const char* env = environment_for_key(e.key); env && std::getenv(env) && *std::getenv(env)) continue;
      CLI::App* target = &app_;
      for (const auto& sub : e.subcommands) {
        CLI::App* next = nullptr;
        for (CLI::App* s : target->get_subcommands([](CLI::App*) { return true; }))
          if (s->get_name() == sub) next = s;
        if (!next)
          throw UsageError(where(e) + tool_ + " has no subcommand '" + sub + "'");
        target = next;
      }
      std::vector<std::vector<std::string>> targets;  // parents of each item made from e
      if (find_option(*target, e.key)) {
        targets.push_back(e.subcommands);
      } else if (e.subcommands.empty()) {
        // A key for the whole tool that only its subcommands have (plh-shm's --broker).
        for (CLI::App* s : app_.get_subcommands([](CLI::App*) { return true; }))
          if (find_option(*s, e.key)) targets.push_back({s->get_name()});
      }
      if (targets.empty()) {
        if (e.tool.empty()) continue;  // a top key for the tools that have it
        throw UsageError(where(e) + tool_ + (e.subcommands.empty() ? "" : " " + join(e.subcommands, " ")) +
                         " has no option --" + e.key);
      }
      for (auto& parents : targets) {
        CLI::ConfigItem item;
        item.parents = std::move(parents);
        item.name = e.key;
        item.inputs = e.values;
        out.push_back(std::move(item));
      }
    }
    return out;
  }

  // The --config the user gave ("" for none): what the config stage saw, else (no file
  // existed, so the stage ran only for a given one) the option's result.
  std::string explicit_file() const {
    if (ran_) return explicit_file_;
    const CLI::Option* config = app_.get_config_ptr();
    return config && config->count() > 0 ? config->results().front() : std::string();
  }

 private:
  CLI::App& app_;
  std::string tool_;
  mutable bool ran_ = false;
  mutable std::string explicit_file_;
};

std::string given_config(const CLI::App& app) {
  auto layered = std::dynamic_pointer_cast<LayeredConfig>(app.get_config_formatter());
  return layered ? layered->explicit_file() : std::string();
}

}  // namespace

DefaultsFiles::DefaultsFiles(CLI::App& app, std::string_view tool) : app_(app), tool_(tool) {
  const auto files = config_files("");
  // CLI11 runs its config stage only when this file exists (or --config names one); the
  // formatter then reads every layer itself.
  app.set_config("--config", files.empty() ? std::string() : files.front(),
                 "Defaults file to read instead of ~/.config/plh/config and /etc/plh/config (see plh(7))")
      ->type_name("FILE");
  app.add_option("--profile", profile_, "Named profile of the defaults files (default: $PLH_PROFILE)")
      ->type_name("NAME")
      ->configurable(false);
  app.config_formatter(std::make_shared<LayeredConfig>(app, std::string(tool)));
}

void DefaultsFiles::after_parse() const {
  // No file at all, so the config stage did not run: a profile asked for is still an error.
  const std::string profile = resolve_profile(given_profile(app_));
  if (!profile.empty() && given_config(app_).empty() && config_files("").empty()) read_config({}, profile, tool_);
}

std::string describe_config(const CLI::App& app, const std::string& tool, bool json) {
  const std::string explicit_file = given_config(app), profile_option = given_profile(app);
  if (!tool.empty() && !is_tool(tool))
    throw UsageError("unknown tool '" + tool + "' (plh tools: " + join({kTools.begin(), kTools.end()}, ", ") + ")");
  const auto files = config_files(explicit_file);
  const std::string profile = resolve_profile(profile_option);
  const std::string profile_from = !profile_option.empty() ? "--profile" : (profile.empty() ? "" : "PLH_PROFILE");
  const auto entries = read_config(files, profile, tool);

  struct Row {
    const ConfigEntry* entry;
    std::string status;  // "in effect", "overridden by ...", "" (no tool given)
  };
  std::vector<Row> rows;
  // With a tool: the first entry of each (subcommands, key) is in effect unless the
  // environment wins; a top entry also applies to the subcommands (not modelled beyond
  // that: the tool's own parse decides which options exist).
  std::vector<std::pair<std::vector<std::string>, std::string>> seen;
  for (const auto& e : entries) {
    Row r{&e, ""};
    if (!tool.empty()) {
      const char* env = environment_for_key(e.key);
      const auto id = std::make_pair(e.subcommands, e.key);
      auto earlier = std::find_if(seen.begin(), seen.end(), [&](const auto& s) {
        return s.second == e.key && (s.first == e.subcommands || s.first.empty());
      });
      if (env && std::getenv(env) && *std::getenv(env))
        r.status = std::string("overridden by the environment (") + env + ")";
      else if (earlier != seen.end())
        r.status = "overridden by an entry above";
      else
        r.status = "in effect";
      seen.push_back(id);
    }
    rows.push_back(std::move(r));
  }

  std::vector<std::string> missing;
  for (const auto& p : explicit_file.empty() ? default_config_paths() : std::vector<std::string>{explicit_file})
    if (std::find(files.begin(), files.end(), p) == files.end()) missing.push_back(p);

  if (json) {
    nlohmann::json doc;
    doc["files"] = files;
    doc["missing"] = missing;
    doc["profile"] = profile.empty() ? nlohmann::json(nullptr) : nlohmann::json(profile);
    doc["profile_from"] = profile_from.empty() ? nlohmann::json(nullptr) : nlohmann::json(profile_from);
    doc["tool"] = tool.empty() ? nlohmann::json(nullptr) : nlohmann::json(tool);
    doc["entries"] = nlohmann::json::array();
    for (const auto& r : rows) {
      nlohmann::json j;
      j["key"] = r.entry->key;
      j["value"] = r.entry->values.size() == 1 ? nlohmann::json(r.entry->values[0]) : nlohmann::json(r.entry->values);
      j["file"] = r.entry->file;
      j["section"] = r.entry->section();
      j["tool"] = r.entry->tool.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.entry->tool);
      j["profile"] = r.entry->profile.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.entry->profile);
      if (!tool.empty()) j["status"] = r.status;
      doc["entries"].push_back(std::move(j));
    }
    return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  std::ostringstream out;
  out << "files: " << (files.empty() ? "none" : join(files, ", "));
  if (!missing.empty()) out << " (not found: " << join(missing, ", ") << ")";
  out << "\nprofile: " << (profile.empty() ? "none" : profile + " (" + profile_from + ")") << "\n";
  if (rows.empty()) {
    out << "no entries" << (tool.empty() ? "" : " for " + tool) << "\n";
    return out.str();
  }
  std::size_t wk = 3, wv = 5, ws = 7, wf = 4;
  auto value_of = [](const ConfigEntry& e) { return join(e.values, ","); };
  for (const auto& r : rows) {
    wk = std::max(wk, r.entry->key.size());
    wv = std::max(wv, value_of(*r.entry).size());
    ws = std::max(ws, r.entry->section().size());
    wf = std::max(wf, r.entry->file.size());
  }
  auto pad = [](std::string s, std::size_t w) {
    s.resize(std::max(w, s.size()), ' ');
    return s;
  };
  out << pad("KEY", wk) << "  " << pad("VALUE", wv) << "  " << pad("SECTION", ws) << "  "
      << (tool.empty() ? "FILE" : pad("FILE", wf) + "  STATUS") << "\n";
  for (const auto& r : rows) {
    out << pad(r.entry->key, wk) << "  " << pad(value_of(*r.entry), wv) << "  " << pad(r.entry->section(), ws) << "  "
        << (tool.empty() ? r.entry->file : pad(r.entry->file, wf) + "  " + r.status) << "\n";
  }
  return out.str();
}

}  // namespace plh::cli
