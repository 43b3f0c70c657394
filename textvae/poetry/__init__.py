"""Everything about Chinese verse: the regular forms, 平水韻 rhyme, tones (平仄) and tonal patterns, the
simplified/traditional writing systems (`script`; textvae.poetry.writing), and the decoding constraints (form,
acrostic, rhyme, meter) as one object of the `Constraint` protocol."""

from textvae.poetry.constraints import RELAXATION_ORDER, Bias, Constraint, ConstraintState, Verse, is_verse_vocabulary
from textvae.poetry.forms import FORMS, cjk_mask, form_compliance, form_of, is_cjk, join_lines, split_lines
from textvae.poetry.rhyme import (LEVEL, OBLIQUE, find_group, level_groups, poem_rhymes, rhyme_groups, rhyme_rate,
                                  rhyme_table, rhymes, tone_of)
from textvae.poetry.tones import char_tones, fixed_tones, follows_tonal_pattern, tonal_compliance, tonal_patterns
from textvae.poetry.writing import SCRIPTS, check_script, in_script, model_script, text_script, to_model_script

__all__ = ["Bias", "Constraint", "ConstraintState", "FORMS", "LEVEL", "OBLIQUE", "RELAXATION_ORDER", "SCRIPTS", "Verse",
           "char_tones", "check_script", "cjk_mask", "find_group", "fixed_tones", "follows_tonal_pattern",
           "form_compliance", "form_of", "in_script", "is_cjk", "is_verse_vocabulary", "join_lines", "level_groups",
           "model_script", "poem_rhymes", "rhyme_groups", "rhyme_rate", "rhyme_table", "rhymes", "split_lines",
           "text_script", "tonal_compliance", "tonal_patterns", "to_model_script", "tone_of"]
