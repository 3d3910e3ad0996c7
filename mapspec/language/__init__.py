"""The spec language: safe YAML (:mod:`.yamlsafe`), the JSON schema (:mod:`.schema`), name patterns
(:mod:`.pattern`), expressions and templates (:mod:`.expr`), argument parsing (:mod:`.args`), the
validated in-memory form (:mod:`.model`) and loading with all checks (:mod:`.load`).

Nothing is imported here: ``import mapspec.language.load`` and friends stay as cheap as they are.
"""
