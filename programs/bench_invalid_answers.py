"""How many answers name no option: the free-text student that shipped before the choice constraint against today's.

    python -m programs.bench_invalid_answers                 # the main job's 3 panelists, 12 test questions each
    python -m programs.bench_invalid_answers --lm local:qwen2.5-coder-1.5b --data hwang --users 6 --test 20

On the main job's users and held-out questions (the same loader, split and seed as `fermi-dspy run`), both students
answer every question zero-shot and with the profile in the prompt. "Before" is `OpinionQA` as it was before commit
8150fa0: a `str` answer field asked to copy one of the options, shown as a list. "After" is `fermi_dspy.programs
.OpinionQA`, which answers by letter, constrained to the question's letters on every LM. An answer names an option
when `fermi_dspy.option_index` finds one (the option's text or letter, case and spacing ignored, a one-element list
read as its element), the same rule the metrics use. Prints the shares and a few of the answers that named none;
writes nothing. Cold by default (a fresh DSPy cache in a new process).
"""

import argparse
import sys
from collections import Counter
from typing import Any

from programs.cold import rerun_cold


def free_text_student() -> Any:
    """The opinion student as it was before the choice constraint (commit 8150fa0^): free text, not a letter."""
    import dspy

    class AnswerSurveyQuestion(dspy.Signature):
        """Answer the multiple-choice survey question with exactly one of the given options."""

        question: str = dspy.InputField()
        options: list[str] = dspy.InputField(desc="the possible answers")
        answer: str = dspy.OutputField(desc="the chosen option, copied exactly from the options")

    class OpinionQA(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.predict = dspy.Predict(AnswerSurveyQuestion)

        def forward(self, question: str, options: list[str]) -> dspy.Prediction:
            return self.predict(question=question, options=options)

    return OpinionQA()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="panelists")
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--train", type=int, default=10)
    parser.add_argument("--test", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lm", default="local", help="the task LM (default: the main job's, local Qwen-0.5B)")
    args = parser.parse_args(argv)
    rerun_cold("programs.bench_invalid_answers")

    import dspy

    from fermi_dspy import option_index
    from fermi_dspy.lm import build_lm
    from fermi_dspy.programs import OpinionQA
    from fermi_dspy.runs import prepare_users
    from programs.baselines import profile_in_prompt, zero_shot

    lm = build_lm(args.lm, role="task")
    users, _ = prepare_users(args.data, on_bad_record="skip", limit=args.users, n_train=args.train, n_test=args.test,
                             seed=args.seed)
    answered: Counter[str] = Counter()
    named_none: Counter[str] = Counter()
    shown: list[str] = []
    for user in users:
        for label, student in (("before", free_text_student()), ("after", OpinionQA())):
            for method, program in (("zero-shot", zero_shot(student)),
                                    ("profile", profile_in_prompt(student, user.profile))):
                for example in user.test:
                    with dspy.context(lm=lm):
                        answer = program(**example.inputs()).answer
                    answered[label] += 1
                    if option_index(answer, example.options) is None:
                        named_none[label] += 1
                        if len(shown) < 8 and label == "before":
                            shown.append(f"  {method}: {str(answer)[:90]!r}")
    print(f"{len(users)} users x {args.test} test questions x 2 methods (zero-shot, profile in prompt), task LM "
          f"{args.lm}, {args.data}:")
    for label in ("before", "after"):
        print(f"  {label:<6} {named_none[label]:>3} of {answered[label]} answers name no option "
              f"({named_none[label] / max(1, answered[label]):.1%})")
    if shown:
        print("Answers of the free-text student that named no option (first few):", *shown, sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
