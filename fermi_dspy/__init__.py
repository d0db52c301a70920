"""fermi-dspy: Fermi (Kim & Yang, "Few-shot Personalization of LLMs with Mis-aligned Responses", NAACL 2025) as a
native DSPy optimizer.

```python
from fermi_dspy import Fermi
personal = Fermi().compile(student, trainset=user_examples, profile=user_profile)
```
"""

from fermi_dspy.accounting import LMUsage
from fermi_dspy.errors import FermiError
from fermi_dspy.memory import ScoredPrompt
from fermi_dspy.metrics import (
    answer_accuracy,
    answer_feedback,
    answer_probability,
    option_index,
    rating_errors,
    rating_score,
)
from fermi_dspy.optimizer import Fermi
from fermi_dspy.profile import Profile, initial_prompt, render_profile
from fermi_dspy.program import PersonalizedProgram
from fermi_dspy.result import FermiResult, IterationRecord
from fermi_dspy.selection import TfidfEmbedder
from fermi_dspy.signatures import ProposePersonalizedPrompt, ProposePromptFromScores
from fermi_dspy.variants import with_prompt

__version__ = "0.1.0"

__all__ = [
    "Fermi",
    "FermiError",
    "FermiResult",
    "IterationRecord",
    "LMUsage",
    "PersonalizedProgram",
    "Profile",
    "ProposePersonalizedPrompt",
    "ProposePromptFromScores",
    "ScoredPrompt",
    "TfidfEmbedder",
    "answer_accuracy",
    "answer_feedback",
    "answer_probability",
    "initial_prompt",
    "option_index",
    "rating_errors",
    "rating_score",
    "render_profile",
    "with_prompt",
]
