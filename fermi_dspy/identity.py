"""Stable keys for a user's answers and profile, so an updated program can be checked against what it learned from.

A key is a sha256 of the content (inputs and labels; the rendered profile), so the saved program records which
answers it was compiled on without storing them twice, and a program of another user (or of changed answers) is
recognized before any LM call.
"""

import hashlib
import json

import dspy

from fermi_dspy.profile import Profile, render_profile


def example_key(example: dspy.Example) -> str:
    """sha256 of an example's inputs and labels (field names included; input order does not matter)."""
    payload = {"inputs": dict(example.inputs().items()), "labels": dict(example.labels().items())}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def profile_key(profile: Profile) -> str:
    """sha256 of the rendered profile ("" for none)."""
    return hashlib.sha256(render_profile(profile).encode()).hexdigest()
