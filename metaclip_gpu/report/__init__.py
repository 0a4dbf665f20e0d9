"""The HTML report of a run (`html`) and its figures (`plots`)."""
