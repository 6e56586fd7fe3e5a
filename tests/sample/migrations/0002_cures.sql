-- Notes whose poison was fixed: remember_note accepts them (dead-letter redrive tests).
CREATE TABLE sample_cures (
    n INTEGER PRIMARY KEY
);
