from llmrl_cli.priors.projection import mentions_any, project_normalised, project_paper

ACTIONS = ["pick up the tomato", "take the bowl", "walk to the cutting board", "serve nothing"]


def test_paper_rule_counts_case_insensitive_substrings():
    text = "Take the bowl. Then TAKE THE BOWL, then pick up the tomato"
    assert project_paper(text, ACTIONS) == "take the bowl"


def test_paper_rule_ties_go_to_the_later_action():
    assert project_paper("pick up the tomato or take the bowl", ACTIONS) == "take the bowl"


def test_paper_rule_no_match_gives_the_last_action():
    assert project_paper("dance", ACTIONS) == "serve nothing"
    assert project_paper("", ["left", "down", "right", "up"]) == "up"


def test_normalised_exact_match_ignores_case_and_punctuation():
    assert project_normalised("  Take the Bowl. ", ACTIONS) == "take the bowl"


def test_normalised_prefers_the_longest_whole_word_mention():
    actions = ["up", "pick up", "pick up the tomato"]
    assert project_normalised("I will pick up the tomato now", actions) == "pick up the tomato"
    # whole words only: "upper" is not "up"
    assert project_normalised("the upper shelf", ["up", "down"]) is None


def test_normalised_earliest_mention_breaks_ties():
    assert project_normalised("right, then left", ["left", "down", "right", "up"]) == "right"


def test_normalised_word_overlap_then_none():
    assert project_normalised("walk to the board", ACTIONS) == "walk to the cutting board"
    assert project_normalised("Nothing. What is the next step?", ["left", "down"]) is None


def test_mentions_any_is_the_paper_rule_finding_a_substring():
    assert mentions_any("I'd TAKE THE BOWL now", ACTIONS)
    assert not mentions_any("dance", ACTIONS)


def test_project_dispatches_on_the_rule_and_the_paper_rule_is_the_default_setting():
    from llmrl_cli.config import RunConfig
    from llmrl_cli.priors.projection import project

    assert RunConfig().projection == "paper"
    assert project("dance", ACTIONS, "paper") == "serve nothing"
    assert project("dance", ACTIONS, "normalised") is None
