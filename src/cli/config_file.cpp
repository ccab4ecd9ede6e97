#include "config_file.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>

#include "lrlab/error.hpp"
#include "options.hpp"

namespace lrlab::cli {

void add_config_option(CLI::App& sub) {
  // Read before parsing by with_config_file(); declared here so that --help lists it.
  sub.add_option("--config", "read options from a TOML or INI file (keys: long option names; "
                             "command-line options win)")
      ->type_name("FILE");
}

namespace {
bool given(const std::vector<std::string>& args, const std::string& flag) {
  for (const std::string& a : args)
    if (a == flag || a.rfind(flag + "=", 0) == 0) return true;
  return false;
}
bool is_key_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; }

// The value after `key =` on line `n`, as CLI11 2.1 reads it: elements separated by commas, each a
// quoted string, a one-line [list] or a bare word (quotes and brackets inside a word are its own), a
// '#' outside quotes starting a comment. CLI11 itself would read what breaks these rules as something
// else: an unclosed list or string as the value with its bracket or quote, a multi-line list as keys
// named after its lines, and words separated by spaces as a list ("warmup(steps=5) + cosine(...)"
// becomes three values).
void check_value_syntax(const std::string& path, size_t n, const std::string& key, const std::string& v) {
  auto fail = [&](const std::string& what) {
    LRLAB_FAIL("config file '", path, "', line ", n, ": ", what);
  };
  int depth = 0;
  bool element_done = false;  // an element ended; only a separator, a ']' or a comment may follow
  size_t i = 0;
  while (i < v.size()) {
    const char c = v[i];
    if (c == ' ' || c == '\t') {
      ++i;
      continue;
    }
    if (c == '#') break;
    if (c == ',') {
      element_done = false;
      ++i;
      continue;
    }
    if (c == ']' && depth > 0) {
      --depth;
      element_done = true;
      ++i;
      continue;
    }
    if (element_done) {
      std::string shown = v.substr(0, v.find('#'));
      shown.erase(0, shown.find_first_not_of(" \t"));
      shown.erase(shown.find_last_not_of(" \t") + 1);
      fail(key + " = " + shown + ": quote a value that holds spaces, and separate list items with commas");
    }
    if (c == '"' || c == '\'') {
      if (v.compare(i, 3, std::string(3, c)) == 0)
        fail("the value of '" + key + "' is in triple quotes, which are not read; quote it with one \" or '");
      size_t j = i + 1;
      while (j < v.size() && v[j] != c) j += (c == '"' && v[j] == '\\') ? 2 : 1;
      if (j >= v.size()) fail("the string of '" + key + "' has no closing " + std::string(1, c));
      i = j + 1;
      element_done = true;
      continue;
    }
    if (c == '[') {
      ++depth;
      ++i;
      continue;
    }
    while (i < v.size() && v[i] != ' ' && v[i] != '\t' && v[i] != ',' && v[i] != '#' && !(v[i] == ']' && depth > 0))
      ++i;
    element_done = true;
  }
  if (depth > 0) fail("the list of '" + key + "' is not closed on its line (a list goes on one line: " + key + " = [a, b])");
}

// What CLI11 would misread rather than refuse: a malformed section header (read as an option named
// "[train"), a line with no '=' (read as a switch), the values above, and a key set twice (read as one
// key with a list of values, which then fails as "Could not convert: --epochs = 2,3" or, for a list
// option, silently joins them).
void check_syntax(const std::string& path) {
  std::ifstream in(path);
  std::set<std::pair<std::string, std::string>> seen;  // (section, key)
  std::string section;
  size_t n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t a = line.find_first_not_of(" \t");
    if (a == std::string::npos || line[a] == '#' || line[a] == ';') continue;
    if (line[a] == '[') {
      const size_t b = line.find(']', a);
      // CLI11 reads "[ train ]" as an option, not as a section: no spaces inside the brackets.
      const size_t name_at = a + 1, name_end = b;
      const size_t rest = b == std::string::npos ? b : line.find_first_not_of(" \t", b + 1);
      const bool ok = b != std::string::npos && name_at < name_end &&
                      std::all_of(line.begin() + static_cast<long>(name_at), line.begin() + static_cast<long>(name_end),
                                  [](char c) { return is_key_char(c) || c == '.'; }) &&
                      rest == std::string::npos;  // CLI11 takes "[train] # x" for an option too
      LRLAB_REQUIRE(ok, "config file '", path, "', line ", n, ": '", line.substr(a),
                    "' is not a section header (write [train], [sweep], ... alone on the line)");
      section = line.substr(name_at, name_end - name_at);
      continue;
    }
    const size_t eq = line.find('=', a);
    std::string key = line.substr(a, eq == std::string::npos ? std::string::npos : eq - a);
    key.erase(key.find_last_not_of(" \t") + 1);
    LRLAB_REQUIRE(eq != std::string::npos, "config file '", path, "', line ", n, ": '", key,
                  "' has no '='; write key = value (", key, " = true for a switch)");
    LRLAB_REQUIRE(!key.empty() && std::all_of(key.begin(), key.end(), is_key_char), "config file '", path,
                  "', line ", n, ": '", key, "' is not a key; keys are option names such as epochs or hidden");
    check_value_syntax(path, n, key, line.substr(eq + 1));
    LRLAB_REQUIRE(seen.insert({section, key}).second, "config file '", path, "': '", key, "' is set twice",
                  section.empty() ? "" : " in section [" + section + "]", "; keep one");
  }
}
}  // namespace

std::vector<std::string> with_config_file(CLI::App& app, int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  CLI::App* sub = nullptr;
  const std::vector<CLI::App*> commands = app.get_subcommands([](CLI::App*) { return true; });
  // CLI11 itself would only say "A subcommand is required".
  std::string names;
  for (size_t i = 0; i < commands.size(); ++i)
    names += (i == 0 ? "" : i + 1 == commands.size() ? " or " : ", ") + commands[i]->get_name();
  LRLAB_REQUIRE(!args.empty(), "give a command: ", names, " (lrlab --help says what each does)");
  // Options belong to a command and follow it; before it only help and version are understood
  // (CLI11 would say "A subcommand is required", or take `--config FILE`'s file for the command).
  const std::string& first = args.front();
  const bool top_level = first == "-h" || first == "--help" || first == "--help-all" || first == "--version";
  LRLAB_REQUIRE(top_level || first.empty() || first[0] != '-', "'", first,
                "' comes before the command: give the command first (lrlab COMMAND ", first,
                " ...), one of ", names);
  for (const std::string& a : args) {
    if (a.empty() || a[0] == '-') continue;
    for (CLI::App* c : commands)
      if (c->get_name() == a) sub = c;
    LRLAB_REQUIRE(sub, "unknown command '", a, "' (expected ", names, ")");
    break;
  }
  // CLI11 hands an option that needs a value the next word even when that is another option
  // (`--optimizer --lr 1e-2`), which then fails as a malformed value under the wrong name.
  if (sub)
    for (size_t i = 0; i + 1 < args.size(); ++i) {
      const CLI::Option* opt = args[i].rfind("--", 0) == 0 ? sub->get_option_no_throw(args[i]) : nullptr;
      const std::string& next = args[i + 1];
      const std::string next_flag = next.substr(0, next.find('='));
      if (opt && opt->get_expected_min() > 0 && next.rfind("--", 0) == 0 && sub->get_option_no_throw(next_flag))
        LRLAB_FAIL(args[i], " needs a value (found the option ", next_flag, ")");
    }
  std::string path;
  bool config = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) path = args[i + 1], config = true;
    else if (args[i].rfind("--config=", 0) == 0) path = args[i].substr(9), config = true;
  }
  LRLAB_REQUIRE(!config || !path.empty(), "--config needs a file name");
  // A number left empty on the command line: CLI11 would read it as 0, or its range check would
  // print it as nothing. An empty text is that option's "none" (--plateau '' turns off a config
  // file's plateau). The parsed values are checked again after parsing (require_values).
  if (sub)
    for (size_t i = 0; i < args.size(); ++i) {
      const bool joined = args[i].rfind("--", 0) == 0 && args[i].back() == '=';
      if (!args[i].empty() && !joined) continue;
      std::string name = joined ? args[i].substr(0, args[i].size() - 1) : "";
      for (size_t j = i; name.empty() && j-- > 0;)
        if (args[j].rfind("-", 0) == 0 && args[j].size() > 1) name = args[j].substr(0, args[j].find('='));
      if (const CLI::Option* opt = name.empty() ? nullptr : sub->get_option_no_throw(name)) check_value(*opt, "");
    }
  if (sub && config) {
    std::ifstream probe(path);
    // A folder opens as a stream too, and reads as an empty file.
    LRLAB_REQUIRE(probe.good() && !std::filesystem::is_directory(path), "cannot read config file '", path, "'",
                  std::filesystem::is_directory(path) ? ": it is a folder" : "");
    check_syntax(path);
    std::vector<CLI::ConfigItem> items;
    try {
      items = CLI::ConfigTOML().from_file(path);
    } catch (const CLI::Error& e) {
      LRLAB_FAIL("config file '", path, "': ", e.what());
    }
    std::vector<std::string> extra;
    for (const CLI::ConfigItem& item : items) {
      if (item.name == "++" || item.name == "--") continue;  // section markers
      if (!item.parents.empty()) {
        // One file may hold the options of several commands, each in its section; a section no
        // command has is a misspelling, whose options would otherwise be dropped unsaid.
        const std::string& section = item.parents.front();
        LRLAB_REQUIRE(std::any_of(commands.begin(), commands.end(),
                                  [&](const CLI::App* c) { return c->get_name() == section; }),
                      "config file '", path, "': section [", section, "] is not a command of lrlab (expected ",
                      names, ")");
        if (section != sub->get_name()) continue;
      }
      const std::string flag = "--" + item.name;
      CLI::Option* opt = sub->get_option_no_throw(flag);
      LRLAB_REQUIRE(opt && flag != "--config", "config file '", path, "': '", item.name,
                    "' is not an option of 'lrlab ", sub->get_name(), "'");
      if (given(args, flag)) continue;
      if (opt->get_expected_min() == 0) {
        std::string v = item.inputs.empty() ? "true" : item.inputs.front();
        std::transform(v.begin(), v.end(), v.begin(), ::tolower);
        const bool on = v == "true" || v == "1" || v == "on" || v == "yes";
        LRLAB_REQUIRE(on || v == "false" || v == "0" || v == "off" || v == "no", "config file '", path, "': '",
                      item.name, "' is a switch: true or false (got '", item.inputs.front(), "')");
        if (on) extra.push_back(flag);
        continue;
      }
      LRLAB_REQUIRE(!item.inputs.empty(), "config file '", path, "': '", item.name, "' has no value");
      extra.push_back(flag);
      if (opt->get_expected_max() == 1 && item.inputs.size() > 1) {
        // `hidden = [256, 128]` (TOML) or `hidden = 256,128` (INI) for an option that takes one
        // comma-separated value on the command line.
        std::string joined;
        for (size_t i = 0; i < item.inputs.size(); ++i) joined += (i ? "," : "") + item.inputs[i];
        extra.push_back(joined);
        continue;
      }
      for (const std::string& in : item.inputs) {
        check_value(*opt, in, "config file '" + path + "': ");
        extra.push_back(in);
      }
    }
    args.insert(args.end(), extra.begin(), extra.end());
  }
  std::reverse(args.begin(), args.end());
  return args;
}

}  // namespace lrlab::cli
