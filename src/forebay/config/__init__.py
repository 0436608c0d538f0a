"""forebay.yaml: one typed schema (`schema`), the frozen runtime settings built
from it (`settings`), and the loader that turns a file into them (`load`)."""
