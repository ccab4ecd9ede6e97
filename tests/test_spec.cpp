// The spec grammar shared by schedules and optimizers: segments, keys, values, positions in errors.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "lrlab/error.hpp"
#include "test_util.hpp"
#include "lrlab/optimizer.hpp"
#include "lrlab/plateau.hpp"
#include "lrlab/schedule.hpp"
#include "lrlab/spec.hpp"

namespace lrlab {
namespace {

using lrlab::testing::error_of;

std::string parse_error(const std::string& text) {
  return error_of([&] { spec::parse(text); });
}

TEST(SpecParse, NameOnly) {
  auto segs = spec::parse("constant");
  ASSERT_EQ(segs.size(), 1u);
  EXPECT_EQ(segs[0].name, "constant");
  EXPECT_EQ(segs[0].pos, 1u);
  EXPECT_TRUE(segs[0].args.empty());
  EXPECT_TRUE(spec::parse("constant()")[0].args.empty());
}

TEST(SpecParse, KeysValuesAndPositions) {
  auto segs = spec::parse("step(every=10,gamma=0.5)");
  ASSERT_EQ(segs.size(), 1u);
  ASSERT_EQ(segs[0].args.size(), 2u);
  EXPECT_EQ(segs[0].args[0].key, "every");
  EXPECT_EQ(segs[0].args[0].value, "10");
  EXPECT_EQ(segs[0].args[0].key_pos, 6u);
  EXPECT_EQ(segs[0].args[0].value_pos, 12u);
  EXPECT_EQ(segs[0].args[1].key, "gamma");
  EXPECT_EQ(segs[0].args[1].value, "0.5");
  EXPECT_EQ(segs[0].args[1].key_pos, 15u);
}

TEST(SpecParse, WhitespaceAroundTokens) {
  auto segs = spec::parse("  warmup ( steps = 5 ) +\tcosine( steps=20ep , min = 1e-3 )  ");
  ASSERT_EQ(segs.size(), 2u);
  EXPECT_EQ(segs[0].name, "warmup");
  EXPECT_EQ(segs[0].pos, 3u);
  EXPECT_EQ(segs[0].args[0].value, "5");
  EXPECT_EQ(segs[1].name, "cosine");
  EXPECT_EQ(segs[1].pos, 26u);
  ASSERT_EQ(segs[1].args.size(), 2u);
  EXPECT_EQ(segs[1].args[0].value, "20ep");
  EXPECT_EQ(segs[1].args[1].key, "min");
  EXPECT_EQ(segs[1].args[1].value, "1e-3");
}

TEST(SpecParse, SignedAndExponentValuesStayInOneSegment) {
  auto segs = spec::parse("x(a=-1,b=1e+2)+y");
  ASSERT_EQ(segs.size(), 2u);
  EXPECT_EQ(segs[0].args[0].value, "-1");
  EXPECT_EQ(segs[0].args[1].value, "1e+2");
  EXPECT_EQ(segs[1].name, "y");
}

TEST(SpecParse, SyntaxErrorsNameTheirPosition) {
  EXPECT_NE(parse_error("").find("empty spec"), std::string::npos);
  EXPECT_NE(parse_error("   ").find("empty spec"), std::string::npos);
  // Each kind of spec says which it is: the text alone cannot.
  EXPECT_EQ(error_of([] { parse_optimizer(""); }), "empty optimizer spec");
  EXPECT_EQ(error_of([] { Schedule::parse(" "); }), "empty schedule spec");
  EXPECT_EQ(error_of([] { parse_plateau(""); }), "empty reduce-on-plateau spec");
  EXPECT_NE(parse_error("step(every=3").find("expected ')' but the spec ended at position 13"), std::string::npos);
  EXPECT_NE(parse_error("step(every)").find("expected '=', found ')' at position 11"), std::string::npos);
  EXPECT_NE(parse_error("step(=3)").find("expected a name, found '=' at position 6"), std::string::npos);
  EXPECT_NE(parse_error("step(every=)").find("expected a value, found ')' at position 12"), std::string::npos);
  EXPECT_NE(parse_error("step + ").find("expected a name but the spec ended at position 8"), std::string::npos);
  EXPECT_NE(parse_error("3step").find("expected a name, found '3' at position 1"), std::string::npos);
  EXPECT_NE(parse_error("step(every=3) cosine").find("expected '+', found 'c' at position 15"),
            std::string::npos);
  EXPECT_NE(parse_error("step(every=3,)").find("expected a name, found ')' at position 14"), std::string::npos);
  EXPECT_NE(parse_error("step(every=3, every=4)").find("key 'every' given twice at position 15"),
            std::string::npos);
  EXPECT_NE(parse_error("step(every").find("in 'step(every'"), std::string::npos) << "quotes the spec";
}

TEST(SpecArgs, NumbersStepsListsWordsBooleans) {
  auto seg = spec::parse("s(a=0.25, n=12, l=3;5;9, w=linear, b=true, neg=-2)")[0];
  spec::ArgReader r(seg, "schedule");
  EXPECT_DOUBLE_EQ(r.number("a", 1), 0.25);
  EXPECT_EQ(r.steps("n", 0), 12);
  EXPECT_EQ(r.required_steps_list("l"), (std::vector<int64_t>{3, 5, 9}));
  EXPECT_EQ(r.word("w", "cos", {"cos", "linear"}), "linear");
  EXPECT_TRUE(r.boolean("b", false));
  EXPECT_DOUBLE_EQ(r.number("neg", 0, true), -2);
  EXPECT_DOUBLE_EQ(r.number("absent", 7), 7);
  EXPECT_EQ(r.steps("absent", 4), 4);
  EXPECT_NO_THROW(r.finish());
}

TEST(SpecArgs, EpochsNeedStepsPerEpochAndRound) {
  auto seg = spec::parse("s(a=2ep, b=0.5ep, c=1;1.5ep)")[0];
  spec::ArgReader r(seg, "schedule", 100);
  EXPECT_EQ(r.steps("a", 0), 200);
  EXPECT_EQ(r.steps("b", 0), 50);
  EXPECT_EQ(r.required_steps_list("c"), (std::vector<int64_t>{1, 150}));
  spec::ArgReader r3(seg, "schedule", 3);
  EXPECT_EQ(r3.steps("b", 0), 2);  // 1.5 steps rounds to 2

  spec::ArgReader none(seg, "schedule");
  std::string msg = error_of([&] { none.steps("a", 0); });
  EXPECT_NE(msg.find("a=2ep at position 5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("steps per epoch"), std::string::npos) << msg;
}

// A step count is exact in a double up to 2^53; past 9e15 it is refused rather than rounded.
TEST(SpecArgs, StepCountsPastNineQuadrillionAreRefused) {
  auto seg = spec::parse("s(a=1e16, b=9e15, c=100000000ep)")[0];
  spec::ArgReader r(seg, "schedule", 1e9);
  EXPECT_NE(error_of([&] { r.steps("a", 0); }).find("a=1e16 at position 5: too many steps"), std::string::npos);
  EXPECT_EQ(r.steps("b", 0), int64_t{9000000000000000});
  EXPECT_NE(error_of([&] { r.steps("c", 0); }).find("too many steps"), std::string::npos);
}

// The exponent marker may be written E, as is_decimal and strtod accept: its sign stays in the value
// instead of starting a new segment.
TEST(SpecParse, UpperCaseExponentKeepsItsSign) {
  auto segs = spec::parse("x(a=1E+2,b=2E-1)+y");
  ASSERT_EQ(segs.size(), 2u);
  ASSERT_EQ(segs[0].args.size(), 2u);
  EXPECT_EQ(segs[0].args[0].value, "1E+2");
  EXPECT_EQ(segs[0].args[1].value, "2E-1");
  EXPECT_EQ(segs[1].name, "y");
}

// Epochs become the nearest whole step count, not the next one up: 0.4 epochs of 3 steps is 1.2 -> 1,
// 0.6 epochs is 1.8 -> 2.
TEST(SpecArgs, EpochsRoundToTheNearestStep) {
  auto seg = spec::parse("s(a=0.4ep, b=0.6ep, c=10.1ep)")[0];
  spec::ArgReader r(seg, "schedule", 3);
  EXPECT_EQ(r.steps("a", 0), 1);
  EXPECT_EQ(r.steps("b", 0), 2);
  EXPECT_EQ(r.steps("c", 0), 30);  // 30.3
}

TEST(SpecArgs, BadValuesNameKeyAndPosition) {
  auto seg = spec::parse("s(n=1.5, x=abc, neg=-1, inf=1e999, l=1;;2, w=up, b=maybe)")[0];
  spec::ArgReader r(seg, "schedule");
  EXPECT_NE(error_of([&] { r.steps("n", 0); }).find("n=1.5 at position 5"), std::string::npos);
  EXPECT_NE(error_of([&] { r.number("x", 0); }).find("not a number"), std::string::npos);
  EXPECT_NE(error_of([&] { r.number("neg", 0); }).find("must not be negative"), std::string::npos);
  EXPECT_NE(error_of([&] { r.number("inf", 0); }).find("not a finite number"), std::string::npos);
  EXPECT_NE(error_of([&] { r.required_steps_list("l"); }).find("empty item"), std::string::npos);
  EXPECT_NE(error_of([&] { r.word("w", "a", {"a", "b"}); }).find("expected one of a, b"), std::string::npos);
  EXPECT_NE(error_of([&] { r.boolean("b", false); }).find("expected true or false"), std::string::npos);
  EXPECT_NE(error_of([&] { r.required_number("missing"); }).find("needs the key 'missing'"), std::string::npos);
}

// An unknown key is listed with the keys the segment takes: every key asked for, read or not.
TEST(SpecArgs, FinishRejectsUnreadKeysAndListsTheKnownOnes) {
  auto seg = spec::parse("step(every=3, gama=0.5)")[0];
  spec::ArgReader r(seg, "schedule");
  r.has("steps");
  r.steps("every", 0);
  r.number("gamma", 0.1);
  EXPECT_EQ(error_of([&] { r.finish(); }),
            "unknown key 'gama' at position 15 for schedule 'step' (known: steps, every, gamma)");
  auto none = spec::parse("x(a=1)")[0];
  EXPECT_EQ(error_of([&] { spec::ArgReader(none, "data set").finish(); }),
            "unknown key 'a' at position 3 for data set 'x' (it takes none)");
}

// PyTorch's and Keras's names for lrlab's keys say which key they are, where the segment takes it.
TEST(SpecArgs, OtherLibrariesSpellingsNameLrlabsKey) {
  EXPECT_NE(error_of([] { parse_optimizer("adam(betas=0.9)"); }).find("betas=(b1, b2) are beta1=b1, beta2=b2 (known: "),
            std::string::npos);
  const std::string rho = error_of([] { parse_optimizer("rmsprop(rho=0.9)"); });
  EXPECT_NE(rho.find("Keras's rho is alpha"), std::string::npos) << rho;
  EXPECT_NE(rho.find("known: keras, weight_decay, wd, maximize, clip, check_finite, alpha, eps, momentum, centered)"),
            std::string::npos) << rho;
  // SGD has no alpha: no hint, the list alone.
  EXPECT_EQ(error_of([] { parse_optimizer("sgd(rho=0.9)"); }).find("alpha"), std::string::npos);
  // A required key given under another library's name.
  EXPECT_NE(error_of([] { Schedule::parse("step(step_size=3)"); }).find("needs the key 'every' (given: step_size at "
                                                                        "position 6); PyTorch's step_size is every"),
            std::string::npos);
  // One name, two keys: Keras's decay_rate is exp's gamma but invtime's rate.
  EXPECT_NE(error_of([] { Schedule::parse("invtime(decay_rate=1)"); }).find("decay_rate is rate"), std::string::npos);
  EXPECT_NE(error_of([] { Schedule::parse("exp(decay_rate=1)"); }).find("decay_rate is gamma"), std::string::npos);
}

// "-0" is no negative number; it reads as 0, so no output shows -0 (gamma=-0 gave rows of -0).
TEST(SpecArgs, MinusZeroReadsAsZero) {
  auto seg = spec::parse("s(a=-0, b=-0.0e5, c=-0)")[0];
  spec::ArgReader r(seg, "schedule");
  for (const char* key : {"a", "b"}) {
    const double v = r.number(key, 1);
    EXPECT_EQ(v, 0) << key;
    EXPECT_FALSE(std::signbit(v)) << key;
  }
  EXPECT_FALSE(std::signbit(r.number("c", 1, true)));
  EXPECT_FALSE(std::signbit(Schedule::parse("step(every=2,gamma=-0)").multiplier(3, 1)));
}

// A count of epochs that rounds to too few steps says what it rounded to.
TEST(SpecArgs, EpochValuesSayWhatTheyRoundedTo) {
  EXPECT_NE(error_of([] { Schedule::parse("step(every=0.1ep)", 1); })
                .find("every=0.1ep at position 12: must be at least 1 (0.1ep at 1 step per epoch rounds to 0 steps)"),
            std::string::npos);
  EXPECT_NE(error_of([] { Schedule::parse("warmup(steps=0.2ep)", 2); }).find("at 2 steps per epoch rounds to 0 steps"),
            std::string::npos);
  // A value in steps has nothing to explain.
  EXPECT_EQ(error_of([] { Schedule::parse("step(every=0)", 2); }).find("rounds"), std::string::npos);
}

}  // namespace
}  // namespace lrlab

namespace {

// Every lrlab::Error prints as one line of printable text, whatever the input it quotes held.
TEST(ErrorMessages, AreOnePrintableLine) {
  auto what = [](const std::string& text) { return std::string(lrlab::Error(text).what()); };
  EXPECT_EQ(what(std::string("a\nb\0c\td", 7)), "a\\nb\\x00c\\td");
  EXPECT_EQ(what("caf\xc3\xa9 \xf0\x9f\x93\x88"), "caf\xc3\xa9 \xf0\x9f\x93\x88");  // UTF-8 stays whole
  EXPECT_EQ(what("x\xc2\x85y"), "x\\xc2\\x85y");                                 // NEL, a C1 control
  EXPECT_EQ(what("x\xe2\x80\xa8y"), "x\\xe2\\x80\\xa8y");                        // the line separator
  EXPECT_EQ(what("x\xc0\x8ay"), "x\\xc0\\x8ay");                                 // an overlong newline
  EXPECT_EQ(what("x\xed\xa0\x80y"), "x\\xed\\xa0\\x80y");                        // a surrogate
  EXPECT_EQ(what("x\xc3"), "x\\xc3");                                            // cut short
}

}  // namespace
