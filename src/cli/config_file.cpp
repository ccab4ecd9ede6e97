#include "config_file.hpp"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <optional>
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
std::string trimmed(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r");
  return a == std::string::npos ? "" : s.substr(a, s.find_last_not_of(" \t\r") - a + 1);
}

// A value's elements as CLI11 2.1 splits them: quoted strings and bare words, separated by commas
// or spaces. What it would misread: a string with no closing quote (kept with its quote), text
// right after a closing quote (dropped), triple quotes (read with two of their quotes).
void check_elements(const std::string& where, const std::string& key, const std::string& v) {
  size_t i = 0;
  while (i < v.size()) {
    const char c = v[i];
    if (c == ' ' || c == '\t' || c == ',') {
      ++i;
      continue;
    }
    if (c == '"' || c == '\'') {
      LRLAB_REQUIRE(v.compare(i, 3, std::string(3, c)) != 0, where, "the value of '", key,
                    "' is in triple quotes, which are not read; quote it with one \" or '");
      const size_t close = v.find(c, i + 1);
      LRLAB_REQUIRE(close != std::string::npos, where, "the string of '", key, "' has no closing ", std::string(1, c));
      i = close + 1;
      LRLAB_REQUIRE(i == v.size() || v[i] == ' ' || v[i] == '\t' || v[i] == ',', where, "'", v.substr(i),
                    "' right after the closing quote of '", key, "' would be dropped; put it inside the quotes");
      continue;
    }
    while (i < v.size() && v[i] != ' ' && v[i] != '\t' && v[i] != ',') ++i;
  }
}

// Reads `path` as CLI11 2.1 does (CLI/Config.hpp, ConfigBase::from_config) and refuses, with the
// line's number, what CLI11 would read as something other than what the line says (it refuses none
// of it itself):
//   - a '#' inside quotes: CLI11 ends the value there;
//   - a list that never closes: CLI11 reads the rest of the file into it, keys and sections included;
//     a '[' alone on its line is no list at all, and a comment on a list's later line becomes one of
//     its values;
//   - the strings above (check_elements);
//   - "[train" or "[train] # note": read as options, not sections;
//   - a key set twice: read as one key with a list of values, which then fails as "Could not
//     convert: --epochs = 2,3" or, for a list option, silently joins them.
// Returns each key's value as written (comment cut, list lines joined; none for a bare key, which
// CLI11 reads as "true"), by (section, key), for
// with_config_file to tell a value CLI11 split at its spaces.
std::map<std::pair<std::string, std::string>, std::optional<std::string>> check_syntax(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(trimmed(line));
  std::map<std::pair<std::string, std::string>, std::optional<std::string>> values;
  std::string section;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    const std::string where = "config file '" + path + "', line " + std::to_string(i + 1) + ": ";
    // CLI11 skips lines shorter than 3 characters, and comment lines.
    if (line.size() < 3 || line[0] == '#' || line[0] == ';') continue;
    if (line[0] == '[') {
      std::string name = line.back() == ']' ? line.substr(1, line.size() - 2) : "";
      if (name.size() > 1 && name.front() == '[' && name.back() == ']') name = name.substr(1, name.size() - 2);
      LRLAB_REQUIRE(!trimmed(name).empty(), where, "'", line,
                    "' is not a section header: write [train], [sweep], ... alone on its line");
      section = name;
      continue;
    }
    const size_t eq = line.find('=');
    std::string key = trimmed(line.substr(0, eq));
    std::optional<std::string> written;
    if (eq != std::string::npos) {
      std::string value = trimmed(line.substr(eq + 1));
      char quote = 0;
      for (const char c : value) {
        if (quote == 0 && (c == '"' || c == '\'')) quote = c;
        else if (c == quote) quote = 0;
        else if (c == '#' && quote != 0)
          LRLAB_FAIL(where, "a '#' in the value of '", key,
                     "' starts a comment even inside quotes, and the value would end before it; leave it out");
      }
      value = trimmed(value.substr(0, value.find('#')));
      if (!value.empty() && value[0] == '[') {
        LRLAB_REQUIRE(value.size() > 1, where, "'", key, " = [' alone is not read as a list; start the items on ",
                      "this line (", key, " = [a, b])");
        const size_t first = i;
        while (value.back() != ']') {
          LRLAB_REQUIRE(i + 1 < lines.size(), "config file '", path, "', line ", first + 1, ": the list of '", key,
                        "' is never closed (a ']' must end a line)");
          const std::string& next = lines[++i];
          LRLAB_REQUIRE(next.find('#') == std::string::npos && next.find('=') == std::string::npos &&
                            (next.empty() || next[0] != '['),
                        "config file '", path, "', line ", i + 1, ": the list of '", key, "' from line ", first + 1,
                        " is still open here, and this line would be read into it (close it with ']' first)");
          value += next;
        }
        check_elements(where, key, value.substr(1, value.size() - 2));
      } else {
        check_elements(where, key, value);
      }
      written = value;
    } else {
      key = trimmed(key.substr(0, key.find('#')));
    }
    // CLI11 reads "a.b = 1" as key b of section a, and "\"key\" = 1" as key.
    std::string sect = section;
    if (const size_t dot = key.rfind('.'); dot != std::string::npos) {
      sect += (sect.empty() ? "" : ".") + key.substr(0, dot);
      key = key.substr(dot + 1);
    } else if (key.size() >= 2 && (key[0] == '"' || key[0] == '\'') && key.back() == key[0]) {
      key = key.substr(1, key.size() - 2);
    }
    LRLAB_REQUIRE(values.emplace(std::make_pair(sect, key), written).second, "config file '", path, "': '", key,
                  "' is set twice", sect.empty() ? "" : " in section [" + sect + "]", "; keep one");
  }
  return values;
}

bool is_number(const std::string& s) {
  char* end = nullptr;
  (void)std::strtod(s.c_str(), &end);
  return !s.empty() && end == s.c_str() + s.size();
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
    const auto written = check_syntax(path);
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
      std::string sect;
      for (const std::string& p : item.parents) sect += (sect.empty() ? "" : ".") + p;
      const auto w = written.find({sect, item.name});
      const bool bare = w != written.end() && !w->second;
      if (opt->get_expected_min() == 0) {
        std::string v = item.inputs.empty() ? "true" : item.inputs.front();
        std::transform(v.begin(), v.end(), v.begin(), ::tolower);
        const bool on = v == "true" || v == "1" || v == "on" || v == "yes";
        LRLAB_REQUIRE(on || v == "false" || v == "0" || v == "off" || v == "no", "config file '", path, "': '",
                      item.name, "' is a switch: true or false (got '", item.inputs.front(), "')");
        if (on) extra.push_back(flag);
        continue;
      }
      LRLAB_REQUIRE(!bare, "config file '", path, "': '", item.name, "' is not a switch: give it a value (",
                    item.name, " = ...)");
      LRLAB_REQUIRE(!item.inputs.empty(), "config file '", path, "': '", item.name, "' has no value");
      extra.push_back(flag);
      // CLI11 keeps the spaces around a list's items ("[1e-3 , 1e-2]").
      std::vector<std::string> inputs;
      for (const std::string& in : item.inputs) inputs.push_back(trimmed(in));
      if (opt->get_expected_max() == 1 && inputs.size() > 1) {
        const std::string text = w == written.end() ? "" : w->second.value_or("");
        // Words CLI11 split at their spaces (no brackets, no commas) are one value, as written
        // (`schedule = warmup(steps=5) + cosine(steps=10)`), unless they are numbers: then, as
        // `hidden = [256, 128]` (TOML) or `hidden = 256,128` (INI), the comma-separated value the
        // option takes on the command line.
        const bool split_at_spaces = !text.empty() && text[0] != '[' && text.find(',') == std::string::npos;
        if (split_at_spaces && !std::all_of(inputs.begin(), inputs.end(), is_number)) {
          check_value(*opt, text, "config file '" + path + "': ");
          extra.push_back(text);
          continue;
        }
        std::string joined;
        for (size_t i = 0; i < inputs.size(); ++i) joined += (i ? "," : "") + inputs[i];
        extra.push_back(joined);
        continue;
      }
      for (const std::string& in : inputs) {
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
