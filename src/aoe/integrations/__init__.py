"""aoe where trainers already are: callbacks for training frameworks, each in a module of
its own, imported only by those who use it (they import their framework)."""
