"""Why llmrl has no ScienceWorld env: does each action of a task's gold path appear in the
engine's valid-action list at its state? (docs/environments.md, "ScienceWorld".)

Needs ``pip install scienceworld`` (1.2.3) and a Java 17 runtime; not part of llmrl's install.
    python scripts/scienceworld_gold_vs_valid.py [--variation 0] [--simplifications easy]
"""

import argparse
import collections

TASKS = ["use-thermometer", "boil", "find-animal", "grow-plant", "test-conductivity",
         "chemistry-mix", "inclined-plane-determine-angle", "lifespan-longest-lived",
         "power-component", "mendelian-genetics-known-plant"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variation", type=int, default=0)
    parser.add_argument("--simplifications", default="easy")
    args = parser.parse_args()
    from scienceworld import ScienceWorldEnv

    env = ScienceWorldEnv("", envStepLimit=300)
    steps = missing = 0
    sizes: list[int] = []
    examples: dict[str, list[str]] = collections.defaultdict(list)
    for task in TASKS:
        env.load(task, args.variation, args.simplifications, generateGoldPath=True)
        _, info = env.reset()
        gold = env.get_gold_action_sequence()
        for action in gold:
            valid = set(info["valid"])
            sizes.append(len(valid))
            steps += 1
            if action not in valid:
                missing += 1
                examples[task].append(action)
            _, _, done, info = env.step(action)
            if done:
                break
        print(f"{task}: {len(gold)} gold actions, {len(examples[task])} not listed, "
              f"score {info['score']}")
    print(f"all: {missing} of {steps} gold actions not in the valid list; valid lists of "
          f"{min(sizes)}-{max(sizes)} actions, mean {sum(sizes) / len(sizes):.0f}")
    for task, actions in examples.items():
        print(f"  {task}: {sorted(set(actions))[:4]}")


if __name__ == "__main__":
    main()
