#include "plh/core/completion.hpp"

#include <algorithm>
#include <set>
#include <sstream>

#include "plh/core/error.hpp"

namespace plh::cli {

namespace {

// What the completion needs to know about one option.
struct Opt {
  std::vector<std::string> names;    // "--broker", "-W", ...
  bool takes_value = false;
  std::vector<std::string> choices;  // from a CLI::IsMember check: "TEXT:{a,b,c}"
  bool file = false;                 // a path: *-file options, --allow-keys, key files
  std::string help;
};

struct Cmd {
  std::string name;  // "" for the tool itself
  std::vector<Opt> opts;
  std::vector<std::string> positionals;  // upper-case names: CHANNEL, NAME, SERVICE, ...
  std::vector<const CLI::App*> subs;
};

std::vector<std::string> choices_of(const std::string& type_name) {
  std::vector<std::string> out;
  const auto open = type_name.find('{');
  const auto close = type_name.find('}', open);
  if (open == std::string::npos || close == std::string::npos) return out;
  std::stringstream ss(type_name.substr(open + 1, close - open - 1));
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

Opt make_opt(const CLI::Option* o) {
  Opt op;
  for (const auto& s : o->get_snames()) op.names.push_back("-" + s);
  for (const auto& l : o->get_lnames()) op.names.push_back("--" + l);
  op.takes_value = o->get_items_expected_max() > 0;
  op.choices = choices_of(o->get_type_name());
  const std::string first = o->get_lnames().empty() ? std::string() : o->get_lnames().front();
  op.file = op.takes_value && (first.find("file") != std::string::npos || first == "allow-keys" ||
                               first == "key" || first.find("-key") != std::string::npos);
  op.help = o->get_description();
  return op;
}

Cmd describe(const CLI::App& app, const std::string& name) {
  Cmd c;
  c.name = name;
  for (const CLI::Option* o : app.get_options()) {
    if (o->get_group().empty()) continue;  // hidden
    if (o->get_positional() && !o->nonpositional()) {
      c.positionals.push_back(o->get_name(true));
      continue;
    }
    Opt op = make_opt(o);
    c.opts.push_back(std::move(op));
  }
  // Options that the parent lets fall through (-v after a subcommand) are offered too.
  if (const CLI::App* parent = app.get_parent(); parent && app.get_fallthrough())
    for (const CLI::Option* o : parent->get_options()) {
      if (o->get_group().empty() || !o->nonpositional()) continue;
      bool have = false;
      for (const auto& op : c.opts)
        for (const auto& l : o->get_lnames())
          if (std::find(op.names.begin(), op.names.end(), "--" + l) != op.names.end()) have = true;
      if (have) continue;
      Opt op = make_opt(o);
      c.opts.push_back(std::move(op));
    }
  for (const CLI::App* s : app.get_subcommands([](const CLI::App*) { return true; }))
    if (!s->get_group().empty()) c.subs.push_back(s);
  return c;
}

std::string fn_name(std::string_view tool) {
  std::string f = "_" + std::string(tool);
  std::replace(f.begin(), f.end(), '-', '_');
  return f;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : " ") + s;
  return out;
}

// Single-quoted for the shell.
std::string sq(std::string_view s) {
  std::string out = "'";
  for (char ch : s) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

// The words completing a positional of this name.
std::string bash_positional(const std::string& pos) {
  if (pos == "CHANNEL" || pos == "SERVICE" || pos == "CHANNELS")
    return "COMPREPLY=($(compgen -W \"$(_plh_channels)\" -- \"$cur\"))";
  if (pos == "NAME")  // plh-shm segments: /dev/shm/plh.NAME
    return "COMPREPLY=($(compgen -W \"$(cd /dev/shm 2>/dev/null && for f in plh.*; do [ -e \"$f\" ] && "
           "echo \"${f#plh.}\"; done)\" -- \"$cur\"))";
  if (pos == "PREFIX" || pos == "FILE") return "COMPREPLY=($(compgen -f -- \"$cur\"))";
  return "";
}

void bash_cmd(std::ostringstream& out, const Cmd& c) {
  std::vector<std::string> all;
  for (const auto& o : c.opts) all.insert(all.end(), o.names.begin(), o.names.end());
  out << "    " << sq(c.name) << ")\n";
  // The value of the option before the cursor.
  out << "      case \"$prev\" in\n";
  for (const auto& o : c.opts) {
    if (!o.takes_value) continue;
    std::string pat;  // a bash case pattern: -W|--timeout
    for (const auto& n : o.names) pat += (pat.empty() ? "" : "|") + n;
    out << "        ";
    out << pat << ") ";
    if (!o.choices.empty()) out << "COMPREPLY=($(compgen -W " << sq(join(o.choices)) << " -- \"$cur\")); return;;\n";
    else if (o.file) out << "COMPREPLY=($(compgen -f -- \"$cur\")); return;;\n";
    else out << "return;;\n";
  }
  out << "      esac\n";
  out << "      if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W " << sq(join(all)) << " -- \"$cur\")); return; fi\n";
  if (!c.subs.empty()) {
    std::vector<std::string> names;
    for (const auto* s : c.subs) names.push_back(s->get_name());
    out << "      COMPREPLY=($(compgen -W " << sq(join(names)) << " -- \"$cur\")); return;;\n";
  } else {
    std::string pos;
    for (const auto& p : c.positionals)
      if (pos.empty()) pos = bash_positional(p);
    out << "      " << (pos.empty() ? std::string(":") : pos) << ";;\n";
  }
}

void collect(const CLI::App& app, const std::string& name, std::vector<Cmd>& out) {
  out.push_back(describe(app, name));
  for (const CLI::App* s : out.back().subs) collect(*s, s->get_name(), out);
}

std::string zsh_escape(std::string s) {
  std::string out;
  for (char ch : s) {
    if (ch == '[' || ch == ']' || ch == ':' || ch == '\\') out += '\\';
    if (ch == '\'') {
      out += "'\\''";
      continue;
    }
    out += ch;
  }
  return out;
}

void zsh_cmd(std::ostringstream& out, const Cmd& c, std::string_view indent) {
  out << indent << "_arguments -s";
  for (const auto& o : c.opts) {
    const std::string help = zsh_escape(o.help.substr(0, o.help.find('\n')));
    std::string spec;
    if (o.names.size() > 1) spec = "(" + join(o.names) + ")'{" + [&] {
      std::string s;
      for (const auto& n : o.names) s += (s.empty() ? "" : ",") + n;
      return s;
    }() + "}'";
    else spec = o.names.front();
    std::string action;
    if (o.takes_value) {
      if (!o.choices.empty()) action = ":value:(" + join(o.choices) + ")";
      else if (o.file) action = ":file:_files";
      else action = ":value: ";
    }
    out << " \\\n" << indent << "  '" << spec << "[" << help << "]" << action << "'";
  }
  if (!c.subs.empty()) {
    out << " \\\n" << indent << "  '1:command:(";
    for (const auto* s : c.subs) out << s->get_name() << " ";
    out << ")' '*::arg:->sub'";
  } else if (!c.positionals.empty()) {
    const std::string& p = c.positionals.front();
    if (p == "CHANNEL" || p == "SERVICE") out << " \\\n" << indent << "  '1:channel:_plh_channels'";
    else if (p == "PREFIX" || p == "FILE") out << " \\\n" << indent << "  '1:file:_files'";
    else out << " \\\n" << indent << "  '1:" << p << ": '";
  }
  out << "\n";
}

}  // namespace

std::string completion_script(const CLI::App& app, std::string_view tool, std::string_view shell) {
  std::vector<Cmd> cmds;
  collect(app, "", cmds);
  std::ostringstream out;
  const std::string fn = fn_name(tool);
  if (shell == "bash") {
    out << "# bash completion for " << tool << ", generated by `" << tool
        << " --completion bash` from the same option definitions as --help.\n";
    out << "_plh_channels() { plh-ctl list 2>/dev/null | awk 'NR > 1 && NF { print $1 }'; }\n";
    out << fn << "() {\n";
    out << "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\" sub=\"\" i\n";
    if (cmds.size() > 1) {
      std::vector<std::string> names;
      for (std::size_t i = 1; i < cmds.size(); ++i) names.push_back(cmds[i].name);
      std::string pat;
      for (const auto& n : names) pat += (pat.empty() ? "" : "|") + n;
      out << "  for ((i = 1; i < COMP_CWORD; i++)); do\n";
      out << "    case \"${COMP_WORDS[i]}\" in " << pat << ") sub=\"${COMP_WORDS[i]}\"; break;; esac\n";
      out << "  done\n";
    }
    out << "  COMPREPLY=()\n";
    out << "  case \"$sub\" in\n";
    for (const auto& c : cmds) bash_cmd(out, c);
    out << "  esac\n";
    out << "}\n";
    out << "complete -F " << fn << " " << tool << "\n";
    return out.str();
  }
  if (shell == "zsh") {
    out << "#compdef " << tool << "\n";
    out << "# zsh completion for " << tool << ", generated by `" << tool
        << " --completion zsh` from the same option definitions as --help.\n";
    out << "(( $+functions[_plh_channels] )) || _plh_channels() {\n"
           "  local -a names; names=(${(f)\"$(plh-ctl list 2>/dev/null | awk 'NR > 1 && NF { print $1 }')\"})\n"
           "  _describe channel names\n}\n";
    out << fn << "() {\n  local state line\n";
    zsh_cmd(out, cmds.front(), "  ");
    if (cmds.size() > 1) {
      out << "  case $state in\n    sub)\n      case $words[1] in\n";
      for (std::size_t i = 1; i < cmds.size(); ++i) {
        out << "        " << cmds[i].name << ")\n";
        zsh_cmd(out, cmds[i], "          ");
        out << "          ;;\n";
      }
      out << "      esac;;\n  esac\n";
    }
    out << "}\n" << fn << " \"$@\"\n";
    return out.str();
  }
  throw UsageError("--completion: expected bash or zsh, not '" + std::string(shell) + "'");
}

}  // namespace plh::cli
