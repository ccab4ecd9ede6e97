#include "config_file.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
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
bool is_quote(char c) { return c == '"' || c == '\'' || c == '`'; }

// CLI11's remove_quotes: one pair of matching " or ' around the whole text.
std::string unquoted(std::string s) {
  if (s.size() > 1 && (s[0] == '"' || s[0] == '\'') && s.back() == s[0]) s = s.substr(1, s.size() - 2);
  return s;
}

// Which characters of `v` lie in quoted elements, quotes included: a quote opens one only where an
// element starts (at the start, after a separator or a '['), \" does not close it, and one never
// closed runs to the end.
std::vector<bool> quoted_mask(const std::string& v) {
  std::vector<bool> in(v.size(), false);
  bool at_start = true;
  for (size_t i = 0; i < v.size(); ++i) {
    const char c = v[i];
    if (at_start && is_quote(c)) {
      size_t close = v.find(c, i + 1);
      while (close != std::string::npos && v[close - 1] == '\\') close = v.find(c, close + 1);
      const size_t end = close == std::string::npos ? v.size() - 1 : close;
      std::fill(in.begin() + static_cast<std::ptrdiff_t>(i), in.begin() + static_cast<std::ptrdiff_t>(end) + 1, true);
      i = end;
      at_start = false;
      continue;
    }
    at_start = c == ',' || c == ' ' || c == '\t' || c == '[';
  }
  return in;
}

// The first of `chars` in `v` outside quoted elements, or npos.
size_t find_outside_quotes(const std::string& v, const char* chars) {
  const std::vector<bool> in = quoted_mask(v);
  for (size_t i = 0; i < v.size(); ++i)
    if (!in[i] && std::strchr(chars, v[i])) return i;
  return std::string::npos;
}

// Where CLI11 cuts a value's first line: at its first '#', inside quotes or not. One inside quotes
// is refused.
size_t comment_cut(const std::string& where, const std::string& key, const std::string& v) {
  const size_t hash = v.find('#');
  LRLAB_REQUIRE(hash == std::string::npos || hash == find_outside_quotes(v, "#"), where, "a '#' in the value of '",
                key, "' starts a comment even inside quotes, and the value would end before it; leave it out");
  return hash;
}

// The elements of a value as CLI11 2.1 splits them (CLI/StringTools.hpp, split_up): at `delim` (a
// space or a tab when ' '), a quoted element (", ' or `, where \" does not close) running to its
// closing quote, after which CLI11 skips one character, taking it for the delimiter. What it would
// misread: a quote never closed (read without its opening quote), a character after a closing
// quote that is no delimiter (dropped), two delimiters in a row (an empty element), triple quotes
// (two quotes kept).
void check_elements(const std::string& where, const std::string& key, const std::string& value, char delim) {
  const std::string v = trimmed(value);  // as split_up trims
  auto is_delim = [delim](char c) { return delim == ' ' ? c == ' ' || c == '\t' : c == delim; };
  size_t i = v.find_first_not_of(" \t");
  while (i != std::string::npos && i < v.size()) {
    const char c = v[i];
    LRLAB_REQUIRE(c != delim, where, "an empty item in the value of '", key,
                  "' (two commas in a row, or a space between a closing quote and its comma)");
    if (is_quote(c)) {
      LRLAB_REQUIRE(v.compare(i, 3, std::string(3, c)) != 0, where, "the value of '", key,
                    "' is in triple quotes, which are not read; quote it with one \" or '");
      size_t close = v.find(c, i + 1);
      while (close != std::string::npos && v[close - 1] == '\\') close = v.find(c, close + 1);
      LRLAB_REQUIRE(close != std::string::npos, where, "the string of '", key, "' has no closing ", std::string(1, c));
      i = close + 1;
      if (i < v.size()) {
        LRLAB_REQUIRE(delim != ',' || v[i] == ',' || v.find_first_not_of(" \t", i) == std::string::npos ||
                          v[v.find_first_not_of(" \t", i)] != ',',
                      where, "a space between a closing quote and its comma in the value of '", key,
                      "' would be read as an empty item; put the comma right after the quote");
        const size_t shown = v.find_first_not_of(" \t", i);
        LRLAB_REQUIRE(is_delim(v[i]), where, "'", v.substr(shown, v.find_first_of(" \t,", shown) - shown),
                      "' right after the closing quote in the value of '", key,
                      "' is not read as written; put it inside the quotes",
                      delim == ',' ? ", or the comma right after the quote" : "");
        ++i;
      }
    } else {
      while (i < v.size() && !is_delim(v[i])) ++i;
      if (i < v.size()) ++i;
    }
    i = v.find_first_not_of(" \t", i);
  }
}

// How CLI11 splits a value that is no list (its first line, comment cut): at commas when there is
// one, else at spaces (a value with neither is one element either way).
char split_of(const std::string& v) { return v.find(',') != std::string::npos ? ',' : ' '; }

// Reads `path` as CLI11 2.1 does (CLI/Config.hpp, ConfigBase::from_config, generate_parents) and
// refuses, with the line's number, what CLI11 would read as something other than what the line
// says; CLI11 itself refuses none of it:
//   - a list that never closes takes in the rest of the file, keys and sections included; a '[' alone
//     on its line is no list; a later line of a list keeps its comment, and two lines with no comma
//     between them are joined into one item ([64 / 32] reads 6432);
//   - the strings and separators of check_elements; a '#' before the '=' (the key takes it in);
//   - "[train" or "[train] # note" (read as options, not sections), a ';' after a value (no comment
//     there), a byte-order mark (read into the first key);
//   - a key set twice: read as one key with a list of values, which then fails as "Could not
//     convert: --epochs = 2,3" or, for a list option, silently joins them.
// Returns each key's value as written (comment cut, list lines joined; none for a bare key, which
// CLI11 reads as "true"), by (section, key) as CLI11 names them (parents joined with '.'), for
// with_config_file to tell a value CLI11 split at its spaces.
std::map<std::pair<std::string, std::string>, std::optional<std::string>> check_syntax(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  LRLAB_REQUIRE(lines.empty() || lines[0].rfind("\xEF\xBB\xBF", 0) != 0, "config file '", path,
                "' starts with a byte-order mark, which would be read into its first key; save it without one");
  for (std::string& line : lines) line = trimmed(line);
  std::map<std::pair<std::string, std::string>, std::optional<std::string>> values;
  std::map<std::pair<std::string, std::string>, size_t> line_of;
  // CLI11's parents: split at '.', each without its quotes; its section "default" (any case) is none.
  auto parents_of = [](std::string text) {
    std::string out, part;
    std::istringstream parts(text);
    while (std::getline(parts, part, '.')) out += (out.empty() ? "" : ".") + unquoted(part);
    return out;
  };
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
      std::string lower = name;
      std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
      section = lower == "default" ? "" : parents_of(name);
      continue;
    }
    const size_t eq = line.find('=');
    const size_t hash = line.find('#');
    LRLAB_REQUIRE(eq == std::string::npos || hash == std::string::npos || hash > eq, where,
                  "the '=' comes after a '#', so the key would be read with the comment; move the comment after the value");
    std::string key = trimmed(line.substr(0, eq));
    std::optional<std::string> written;
    if (eq != std::string::npos) {
      std::string value = trimmed(line.substr(eq + 1));
      value = trimmed(value.substr(0, comment_cut(where, key, value)));
      if (!value.empty() && value[0] == '[') {
        // A list: its first line's comment is cut, then its lines are joined until one ends in ']'.
        LRLAB_REQUIRE(value.size() > 1, where, "'", key, " = [' alone is not read as a list; start the items on ",
                      "this line (", key, " = [a, b])");
        const size_t first = i;
        while (value.back() != ']') {
          LRLAB_REQUIRE(i + 1 < lines.size(), "config file '", path, "', line ", first + 1, ": the list of '", key,
                        "' is never closed (a ']' must end a line)");
          const std::string& next = lines[++i];
          const std::string at = "config file '" + path + "', line " + std::to_string(i + 1) + ": ";
          const size_t comment = find_outside_quotes(next, "#");
          const size_t close = next.find(']');
          LRLAB_REQUIRE(comment == std::string::npos || close > comment, at, "a comment after the ']' closing the list of '",
                        key, "' on a later line keeps the list open (its later lines are read whole); remove it");
          // A key line: a bare name before an '=' (a spec's "steps=5" follows a '(').
          const size_t eq2 = find_outside_quotes(next, "=");
          const bool key_line = eq2 != std::string::npos && eq2 > 0 &&
                                next.find_first_of("(,[") > eq2;
          LRLAB_REQUIRE(comment == std::string::npos && !key_line && (next.empty() || next[0] != '['), at,
                        "the list of '", key, "' from line ", first + 1,
                        " is still open here, and this line would be read into it, comments and keys included ",
                        "(close the list first)");
          LRLAB_REQUIRE(next.empty() || value.back() == '[' || value.back() == ',' || next[0] == ',' || next[0] == ']',
                        at, "this line and the one before it would be read as one item of the list of '", key,
                        "'; end the line before it with a comma");
          value += next;
        }
        check_elements(where, key, value.substr(1, value.size() - 2), ',');
      } else {
        // Unsplit, CLI11 takes off only " or ' around the whole value, with no escapes.
        const bool split = value.find_first_of(", \t") != std::string::npos;
        LRLAB_REQUIRE(split || value.empty() || value[0] != '`', where, "the value of '", key,
                      "' would keep its backticks; quote it with \" or '");
        LRLAB_REQUIRE(split || value.find("\\\"") == std::string::npos, where, "the value of '", key,
                      "' would keep the backslash of its \\\"; quote it with ' instead");
        check_elements(where, key, value, split_of(value));
        const std::vector<bool> in = quoted_mask(value);
        // Inside a value a ';' separates a spec's list items (milestones=10;20); after a blank, or
        // ending the value, it is a statement's end or a comment written as in other formats.
        for (size_t j = 0; j < value.size(); ++j)
          LRLAB_REQUIRE(value[j] != ';' || in[j] ||
                            (j > 0 && value[j - 1] != ' ' && value[j - 1] != '\t' && j + 1 < value.size()),
                        where, "a ';' after the value of '", key,
                        "' is not read as a comment (only '#' is); remove it or write '#'");
      }
      written = value;
    } else {
      key = trimmed(key.substr(0, hash));
    }
    // CLI11 reads "a.b = 1" as key b under a, and "\"key\" = 1" as key.
    std::string sect = section;
    if (const size_t dot = key.rfind('.'); dot != std::string::npos) {
      const std::string more = parents_of(key.substr(0, dot));
      sect += (sect.empty() || more.empty() ? "" : ".") + more;
      key = unquoted(key.substr(dot + 1));
    } else {
      key = unquoted(key);
    }
    const auto id = std::make_pair(sect, key);
    LRLAB_REQUIRE(!line_of.count(id), "config file '", path, "': '", key, "' is set twice",
                  sect.empty() ? "" : " in section [" + sect + "]", " (lines ", line_of[id], " and ", i + 1, "); keep one");
    line_of[id] = i + 1;
    values.emplace(id, written);
  }
  return values;
}

bool is_number(const std::string& s) { return number_error("FLOAT", s).empty(); }
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
    // A folder opens as a stream too, and reads as an empty file. (The error_code form: a name too
    // long, or a folder on the way that cannot be searched, must not throw.)
    std::error_code ec;
    const bool folder = std::filesystem::is_directory(path, ec);
    LRLAB_REQUIRE(probe.good() && !folder, "cannot read config file '", path, "'", folder ? ": it is a folder" : "");
    const auto written = check_syntax(path);
    std::vector<CLI::ConfigItem> items;
    try {
      items = CLI::ConfigTOML().from_file(path);
    } catch (const CLI::Error& e) {
      LRLAB_FAIL("config file '", path, "': ", e.what());
    }
    // What the file sets, by option: a setting in the command's own section wins over one at the
    // top of the file, wherever each stands.
    struct Setting {
      bool in_section = false, on = true;
      std::vector<std::string> values;
    };
    std::map<std::string, Setting> chosen;
    std::vector<std::string> order;
    auto set = [&](const std::string& flag, Setting v) {
      auto it = chosen.find(flag);
      if (it == chosen.end()) order.push_back(flag);
      if (it == chosen.end() || v.in_section || !it->second.in_section) chosen[flag] = std::move(v);
    };
    const std::string where = "config file '" + path + "': ";
    for (const CLI::ConfigItem& item : items) {
      if (item.name == "++" || item.name == "--") continue;  // section markers
      if (!item.parents.empty()) {
        // One file may hold the options of several commands, each in its section; a section no
        // command has is a misspelling, whose options would otherwise be dropped unsaid, and so is
        // a subsection, which CLI11 would drop too.
        std::string sect;
        for (const std::string& p : item.parents) sect += (sect.empty() ? "" : ".") + p;
        LRLAB_REQUIRE(item.parents.size() == 1, where, "section [", sect,
                      "] is not a command of lrlab: there are no subsections (expected ", names, ")");
        const std::string& section = item.parents.front();
        LRLAB_REQUIRE(std::any_of(commands.begin(), commands.end(),
                                  [&](const CLI::App* c) { return c->get_name() == section; }),
                      where, "section [", section, "] is not a command of lrlab (expected ", names, ")");
        if (section != sub->get_name()) continue;
      }
      const std::string flag = "--" + item.name;
      CLI::Option* opt = sub->get_option_no_throw(flag);
      LRLAB_REQUIRE(opt && flag != "--config" && opt != sub->get_help_ptr() && opt != sub->get_help_all_ptr(), where,
                    "'", item.name, "' is not an option of 'lrlab ", sub->get_name(), "'");
      if (given(args, flag)) continue;
      const auto w = written.find({item.parents.empty() ? "" : item.parents.front(), item.name});
      const bool bare = w != written.end() && !w->second;
      Setting setting;
      setting.in_section = !item.parents.empty();
      if (opt->get_expected_min() == 0) {
        LRLAB_REQUIRE(bare || item.inputs.size() == 1, where, "'", item.name,
                      "' is a switch: give it one value, true or false");
        std::string v = item.inputs.empty() ? "true" : item.inputs.front();
        std::transform(v.begin(), v.end(), v.begin(), ::tolower);
        setting.on = v == "true" || v == "1" || v == "on" || v == "yes";
        LRLAB_REQUIRE(setting.on || v == "false" || v == "0" || v == "off" || v == "no", where, "'", item.name,
                      "' is a switch: true or false (got '", item.inputs.front(), "')");
        set(flag, setting);
        continue;
      }
      LRLAB_REQUIRE(!bare, where, "'", item.name, "' is not a switch: give it a value (", item.name, " = ...)");
      LRLAB_REQUIRE(!item.inputs.empty(), where, "'", item.name, "' has no value");
      // CLI11 keeps the spaces around a list's items ("[1e-3 , 1e-2]").
      std::vector<std::string> inputs;
      for (const std::string& in : item.inputs) inputs.push_back(trimmed(in));
      const std::string text = w == written.end() ? "" : w->second.value_or("");
      const bool listed = !text.empty() && text[0] == '[';
      if (opt->get_expected_max() == 1 && inputs.size() > 1) {
        // Words CLI11 split at their spaces or commas are one value, as written
        // (`schedule = warmup(steps=5) + cosine(steps=10)`), unless they are numbers: then, as
        // `hidden = [256, 128]` (TOML) or `hidden = 256,128` (INI), the comma-separated value the
        // option takes on the command line.
        if (!listed && !text.empty() && !std::all_of(inputs.begin(), inputs.end(), is_number)) {
          inputs = {text};
        } else {
          std::string joined;
          for (size_t i = 0; i < inputs.size(); ++i) joined += (i ? "," : "") + inputs[i];
          inputs = {joined};
        }
      } else if (inputs.size() > 1) {
        // A list option (sweep's --schedule, --optimizer): CLI11 split at every comma or space,
        // inside a spec's parentheses and around a '+' too. The pieces of one spec go back together.
        const char glue = listed || text.find(',') != std::string::npos ? ',' : ' ';
        std::vector<std::string> specs;
        int depth = 0;
        for (const std::string& piece : inputs) {
          const bool joins = !specs.empty() && (depth > 0 || piece == "+" || piece[0] == '+' ||
                                                (!specs.back().empty() && specs.back().back() == '+'));
          if (joins) specs.back() += (glue == ',' && depth > 0 ? "," : " ") + piece;
          else specs.push_back(piece);
          for (const char c : piece) depth += c == '(' ? 1 : c == ')' ? -1 : 0;
        }
        inputs = specs;
      }
      for (const std::string& in : inputs) check_value(*opt, in, where);
      setting.values = inputs;
      set(flag, setting);
    }
    std::vector<std::string> extra;
    for (const std::string& flag : order) {
      const Setting& v = chosen[flag];
      if (!v.on) continue;
      extra.push_back(flag);
      extra.insert(extra.end(), v.values.begin(), v.values.end());
    }
    args.insert(args.end(), extra.begin(), extra.end());
  }
  std::reverse(args.begin(), args.end());
  return args;
}

}  // namespace lrlab::cli
